"""Scores of the autoencoder: reconstruction (and denoising) error against the training mean
image, and anomaly detection of a class held out of training, with the threshold chosen on
validation data only."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from kerasops.data import PreparedData, Split
from kerasops.models.autoencoder.builder import AutoencoderConfig


def without_class(split: Split, label: int) -> Split:
    """The examples of `split` whose label is not `label` (all of them for label -1)."""
    keep = np.asarray(split.y).reshape(-1) != label
    return Split(np.asarray(split.x)[keep], np.asarray(split.y)[keep])


def reconstruction_errors(autoencoder: keras.Model, images: np.ndarray, pixel_max: float):
    """Per-image mean squared error in [0, 1] pixel units: (N,)."""
    reconstruction = np.asarray(autoencoder.predict(images, batch_size=256, verbose=0))
    diff = images.astype("float32") / pixel_max - reconstruction  # (N, H, W, C)
    return np.mean(diff.reshape(len(images), -1) ** 2, axis=1)


def mean_image_errors(train_images: np.ndarray, images: np.ndarray, pixel_max: float):
    """Errors of the trivial reconstruction: always the training mean image. (N,)."""
    mean = train_images.astype("float32").mean(axis=0) / pixel_max
    diff = images.astype("float32") / pixel_max - mean[None]
    return np.mean(diff.reshape(len(images), -1) ** 2, axis=1)


def add_noise(images: np.ndarray, stddev: float, pixel_max: float, seed: int) -> np.ndarray:
    """Gaussian noise in [0, 1] units, clipped back to the pixel range."""
    noise = np.random.default_rng(seed).normal(0.0, stddev, images.shape)
    return (np.clip(images / pixel_max + noise, 0.0, 1.0) * pixel_max).astype("float32")


def anomaly_metrics(
    normal_scores: np.ndarray, anomaly_scores: np.ndarray, threshold: float, prefix: str
) -> dict[str, float]:
    """ROC AUC of the scores and precision/recall/F1 of `score > threshold` (anomaly = 1)."""
    truth = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomaly_scores))]
    scores = np.r_[normal_scores, anomaly_scores]
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, scores > threshold, average="binary", zero_division=0
    )
    return {
        f"{prefix}roc_auc": float(roc_auc_score(truth, scores)),
        f"{prefix}precision": float(precision),
        f"{prefix}recall": float(recall),
        f"{prefix}f1": float(f1),
        f"{prefix}false_positive_rate": float(np.mean(normal_scores > threshold)),
    }


def autoencoder_metrics(
    model: keras.Model, prepared: PreparedData, config: AutoencoderConfig, split: str = "test"
) -> dict[str, float]:
    """Reconstruction (and denoising) MSE vs baselines; threshold; anomaly detection quality."""
    pixel_max = config.inputs.pixel_max
    label = config.anomaly_class
    train_x = without_class(prepared.splits["train"], label).x
    val_x = without_class(prepared.splits["val"], label).x
    test = prepared.splits[split]
    is_anomaly = np.asarray(test.y).reshape(-1) == label
    normal_x, anomaly_x = np.asarray(test.x)[~is_anomaly], np.asarray(test.x)[is_anomaly]

    errors = reconstruction_errors(model, normal_x, pixel_max)
    threshold = float(
        np.percentile(reconstruction_errors(model, val_x, pixel_max), config.threshold_percentile)
    )
    metrics = {
        "test_reconstruction_mse": float(errors.mean()),
        "baseline_mean_image_mse": float(mean_image_errors(train_x, normal_x, pixel_max).mean()),
        "anomaly_threshold": threshold,
    }
    if config.mode == "denoise":
        noisy = add_noise(normal_x, config.noise_stddev, pixel_max, seed=0)
        denoised = np.asarray(model.predict(noisy, batch_size=256, verbose=0))
        metrics["test_denoising_mse"] = float(np.mean((denoised - normal_x / pixel_max) ** 2))
        metrics["baseline_noisy_input_mse"] = float(np.mean(((noisy - normal_x) / pixel_max) ** 2))
    if len(anomaly_x):
        anomaly_errors = reconstruction_errors(model, anomaly_x, pixel_max)
        metrics |= anomaly_metrics(errors, anomaly_errors, threshold, "anomaly_")
        mean_normal = mean_image_errors(train_x, normal_x, pixel_max)
        mean_anomaly = mean_image_errors(train_x, anomaly_x, pixel_max)
        metrics["baseline_mean_image_roc_auc"] = anomaly_metrics(
            mean_normal, mean_anomaly, 0.0, ""
        )["roc_auc"]
    return metrics
