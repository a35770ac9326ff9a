"""Scores of the autoencoder: reconstruction (and denoising) error against the training mean
image, and anomaly detection of a class held out of training, with the threshold chosen on
validation data only.

Each split is streamed batch by batch: errors are summed, examples above the threshold counted,
and the per-example scores that the validation percentile and the ROC AUC rank are kept for at
most MAX_SCORED_EXAMPLES examples of a split (an evenly strided sample beyond that).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from kerasops.data import PreparedData, Split
from kerasops.models.autoencoder.builder import AutoencoderConfig
from kerasops.models.evaluation import (
    MAX_SCORED_EXAMPLES,
    StridedSample,
    precision_recall_f1,
    predict_rows,
)


def without_class(split: Split, label: int) -> Split:
    """The examples of `split` whose label is not `label` (all of them for label -1)."""
    keep = np.asarray(split.y).reshape(-1) != label
    return Split(np.asarray(split.x)[keep], np.asarray(split.y)[keep])


def reconstruction_errors(autoencoder: keras.Model, images: np.ndarray, pixel_max: float):
    """Per-image mean squared error in [0, 1] pixel units: (N,)."""
    reconstruction = np.asarray(predict_rows(autoencoder, images))
    diff = images.astype("float32") / pixel_max - reconstruction  # (N, H, W, C)
    return np.mean(diff.reshape(len(images), -1) ** 2, axis=1)


def mean_image_errors(mean: np.ndarray, images: np.ndarray, pixel_max: float):
    """Errors of the trivial reconstruction, always `mean` (the training mean image in [0, 1]
    units): (N,)."""
    diff = images.astype("float32") / pixel_max - mean[None]
    return np.mean(diff.reshape(len(images), -1) ** 2, axis=1)


def mean_image(split: Split, label: int, pixel_max: float, batch_size: int) -> np.ndarray:
    """The mean of the split's images not of class `label`, in [0, 1] units: (H, W, C)."""
    total, count = 0.0, 0
    for x, y in split.batches(batch_size):
        normal = np.asarray(x)[np.asarray(y).reshape(-1) != label].astype("float32")
        total, count = total + normal.sum(axis=0, dtype=np.float64), count + len(normal)
    return (total / count).astype("float32") / pixel_max


def add_noise(
    images: np.ndarray, stddev: float, pixel_max: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise in [0, 1] units, clipped back to the pixel range."""
    noise = rng.normal(0.0, stddev, images.shape)
    return (np.clip(images / pixel_max + noise, 0.0, 1.0) * pixel_max).astype("float32")


@dataclasses.dataclass
class AnomalyScores:
    """One scorer's per-example scores on a split, gathered batch by batch: exact counts of the
    normal and anomalous examples above `threshold`, and the (score, is anomaly) pairs of the
    sampled examples for the ROC AUC."""

    threshold: float
    normal: int = 0
    anomalies: int = 0
    flagged_normal: int = 0
    flagged_anomalies: int = 0
    scores: list = dataclasses.field(default_factory=list)
    truths: list = dataclasses.field(default_factory=list)

    def add(self, scores: np.ndarray, is_anomaly: np.ndarray, picked: np.ndarray) -> None:
        flagged = scores > self.threshold
        self.normal += int(np.sum(~is_anomaly))
        self.anomalies += int(np.sum(is_anomaly))
        self.flagged_normal += int(np.sum(flagged & ~is_anomaly))
        self.flagged_anomalies += int(np.sum(flagged & is_anomaly))
        self.scores.append(scores[picked])
        self.truths.append(is_anomaly[picked])

    def metrics(self, prefix: str) -> dict[str, float]:
        """ROC AUC of the scores; precision/recall/F1 and false positive rate of
        `score > threshold` (anomaly = 1)."""
        tp = self.flagged_anomalies
        precision, recall, f1 = precision_recall_f1(
            np.array([tp]), np.array([tp + self.flagged_normal]), np.array([self.anomalies])
        )
        fpr = self.flagged_normal / self.normal if self.normal else float("nan")
        return {
            f"{prefix}roc_auc": float(
                roc_auc_score(np.concatenate(self.truths), np.concatenate(self.scores))
            ),
            f"{prefix}precision": float(precision[0]),
            f"{prefix}recall": float(recall[0]),
            f"{prefix}f1": float(f1[0]),
            f"{prefix}false_positive_rate": float(fpr),
        }


def anomaly_threshold(
    model: keras.Model, val: Split, config: AutoencoderConfig, batch_size: int
) -> float:
    """The threshold_percentile of the validation split's normal reconstruction errors."""
    label, pixel_max = config.anomaly_class, config.inputs.pixel_max
    sample, errors = StridedSample(len(val), MAX_SCORED_EXAMPLES), []
    for x, y in val.batches(batch_size):
        picked = sample.pick(len(x)) & (np.asarray(y).reshape(-1) != label)
        if picked.any():
            errors.append(reconstruction_errors(model, np.asarray(x)[picked], pixel_max))
    return float(np.percentile(np.concatenate(errors), config.threshold_percentile))


def denoising_sums(
    model: keras.Model, normal: np.ndarray, config: AutoencoderConfig, rng: np.random.Generator
) -> np.ndarray:
    """Squared errors summed over normal images (B, H, W, C) given noise from `rng`: [of the
    denoised images, of the noisy inputs, pixel values]."""
    pixel_max = config.inputs.pixel_max
    if not len(normal):
        return np.zeros(3)
    noisy = add_noise(normal, config.noise_stddev, pixel_max, rng)
    denoised = np.asarray(predict_rows(model, noisy))
    denoised_sum = np.sum((denoised - normal / pixel_max) ** 2, dtype=np.float64)
    noisy_sum = np.sum(((noisy - normal) / pixel_max) ** 2, dtype=np.float64)
    return np.array([denoised_sum, noisy_sum, normal.size])


def autoencoder_metrics(
    model: keras.Model,
    prepared: PreparedData,
    config: AutoencoderConfig,
    split: str = "test",
    batch_size: int = 256,
) -> dict[str, float]:
    """Reconstruction (and denoising) MSE vs baselines; threshold; anomaly detection quality."""
    pixel_max, label, test = config.inputs.pixel_max, config.anomaly_class, prepared.splits[split]
    mean = mean_image(prepared.splits["train"], label, pixel_max, batch_size)
    threshold = anomaly_threshold(model, prepared.splits["val"], config, batch_size)
    found, baseline = AnomalyScores(threshold), AnomalyScores(0.0)
    error_sums, denoising = np.zeros(2), np.zeros(3)  # model, mean image; see denoising_sums
    sample, rng = StridedSample(len(test), MAX_SCORED_EXAMPLES), np.random.default_rng(0)
    for x, y in test.batches(batch_size):
        x, is_anomaly = np.asarray(x), np.asarray(y).reshape(-1) == label
        picked = sample.pick(len(x))
        errors = reconstruction_errors(model, x, pixel_max)
        mean_errors = mean_image_errors(mean, x, pixel_max)
        found.add(errors, is_anomaly, picked)
        baseline.add(mean_errors, is_anomaly, picked)
        normal = ~is_anomaly
        error_sums += [np.sum(e[normal], dtype=np.float64) for e in (errors, mean_errors)]
        if config.mode == "denoise":  # noise for the normal images, drawn in their order
            denoising += denoising_sums(model, x[normal], config, rng)
    mse, mean_mse = error_sums / found.normal if found.normal else (float("nan"),) * 2
    metrics = {
        "test_reconstruction_mse": float(mse),
        "baseline_mean_image_mse": float(mean_mse),
        "anomaly_threshold": threshold,
    }
    if config.mode == "denoise":
        metrics["test_denoising_mse"] = float(denoising[0] / denoising[2])
        metrics["baseline_noisy_input_mse"] = float(denoising[1] / denoising[2])
    if found.anomalies:
        metrics |= found.metrics("anomaly_")
        metrics["baseline_mean_image_roc_auc"] = baseline.metrics("")["roc_auc"]
    return metrics
