"""The keyword spotter's, GAN's, autoencoder's and detector's metrics stream their splits: the
same figures as the whole-split computations they replaced (kept here as the reference), on
small prepared splits read in several batches, without ever reading a whole split."""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from kerasops.data import Split, load_prepared, prepare_dataset, resolve_dataset_config
from kerasops.models import build_model, preset_values
from kerasops.models.autoencoder.metrics import autoencoder_metrics
from kerasops.models.detector.metrics import (
    Detections,
    average_precision,
    evaluate_detector,
    match_image,
)
from kerasops.models.evaluation import (
    StridedSample,
    classification_metrics,
    confusion_counts,
    confusion_metrics,
    predict,
    score_classifier,
)
from kerasops.models.gan.metrics import gan_metrics, generate
from kerasops.models.keyword_spotter.metrics import UNSEEN_VOICE, evaluate_keyword_spotter
from kerasops.models.registry import get_family
from kerasops.models.training import TrainConfig
from tests.test_keyword_spotter import tone, write_wav

BATCH = 32  # several batches per split
TOLERANCE = {"rel": 1e-6, "abs": 1e-12}  # float32 errors summed in another order


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    return root / "raw", root / "prepared"


def prepared(roots, name: str, overrides: dict | None = None):
    raw, folder = roots
    if not (folder / name / "manifest.json").is_file():
        prepare_dataset(name, resolve_dataset_config(name, overrides or {}), raw, folder)
    return load_prepared(name, folder)


def untrained(name: str, preset: str, data, **values):
    """The family's model for `data`, with seeded initial weights; and its typed config."""
    keras.utils.set_random_seed(0)
    family = get_family(name)
    spec = family.recipe.input_spec(data, TrainConfig())
    config = family.config.from_dict(
        {**preset_values(name, preset), **values, "inputs": spec.to_dict()}
    )
    return build_model(name, config), config


@contextlib.contextmanager
def whole_splits_unread():
    """Reading any split's x or y whole fails the test inside this block."""

    def whole(self):
        raise AssertionError("a whole split was read into memory")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Split, "x", property(whole))
        patch.setattr(Split, "y", property(whole))
        yield


def assert_same_figures(streamed: dict, whole: dict) -> None:
    assert sorted(streamed) == sorted(whole)
    for key, value in whole.items():
        assert streamed[key] == pytest.approx(value, **TOLERANCE), key


# --- shared pieces ------------------------------------------------------------------------------


def test_a_strided_sample_keeps_the_same_examples_whatever_the_batches():
    for sizes in ([10] * 10, [3, 50, 47], [100]):
        sample = StridedSample(100, 30)
        picked = np.concatenate([sample.pick(n) for n in sizes])
        assert np.flatnonzero(picked).tolist() == list(range(0, 100, 4))
    assert StridedSample(100, 100).pick(100).all()


def test_confusion_metrics_are_classification_metrics_from_counts():
    rng = np.random.default_rng(0)
    truth = rng.choice([0, 1, 2, 4], size=300)  # class 3 never true
    probabilities = rng.dirichlet(np.ones(6), size=300)
    probabilities[:, 5] = 0.0  # class 5 never predicted
    train = rng.integers(0, 6, size=500)
    classes = tuple("abcdef")
    whole = classification_metrics(truth, probabilities, train, classes)
    confusion = confusion_counts(truth, probabilities.argmax(axis=-1), len(classes))
    streamed = confusion_metrics(confusion, int(np.bincount(train).argmax()), classes)
    assert_same_figures(streamed.metrics, whole.metrics)
    assert streamed.confusion == whole.confusion and streamed.classes == classes


# --- keyword spotter ----------------------------------------------------------------------------


def keyword_spotter_reference(model, data, split="test"):
    """The whole-split computation: every label and prediction in memory, scikit-learn."""
    classes = data.manifest.classes
    majority = int(np.bincount(np.asarray(data.splits["train"].y).astype(int)).argmax())

    def majority_macro_f1(truth):
        labels = list(range(len(classes)))
        guesses = np.full_like(truth, majority)
        return float(f1_score(truth, guesses, labels=labels, average="macro", zero_division=0))

    metrics = dict(score_classifier(model, data, split).metrics)
    metrics["baseline_majority_macro_f1"] = majority_macro_f1(np.asarray(data.splits[split].y))
    held = score_classifier(model, data, UNSEEN_VOICE).metrics
    metrics["unseen_voice_accuracy"] = held["test_accuracy"]
    metrics["unseen_voice_macro_f1"] = held["test_macro_f1"]
    metrics["baseline_unseen_voice_majority_accuracy"] = held["baseline_majority_accuracy"]
    metrics["baseline_unseen_voice_majority_macro_f1"] = majority_macro_f1(
        np.asarray(data.splits[UNSEEN_VOICE].y)
    )
    return metrics


def write_tones(folder: Path, clips: int) -> None:
    """Three classes of short tones, unbalanced: `clips`, 3/4 and 1/2 of it."""
    for name, hz, share in (("low", 300.0, 1.0), ("mid", 900.0, 0.75), ("high", 2000.0, 0.5)):
        for i in range(int(clips * share)):
            write_wav(folder / name / f"{i}.wav", tone(hz * (1 + 0.01 * i), 0.3))


def test_keyword_spotter_streams_the_figures_it_computed_whole(tmp_path):
    write_tones(tmp_path / "own", 32)
    write_tones(tmp_path / "speaker_b", 16)
    config = {"source": "audio_folder", "path": "own", "unseen_voice_path": "speaker_b"}
    prepare_dataset("own", {**config, "test_fraction": 0.3}, tmp_path, tmp_path / "prepared")
    data = load_prepared("own", tmp_path / "prepared")
    model, _ = untrained("keyword_spotter", "keyword_spotter_tiny", data)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    train = data.splits["train"]  # a few epochs: an untrained spotter answers one class
    model.fit(np.asarray(train.x), np.asarray(train.y), epochs=3, batch_size=8, verbose=0)
    data = load_prepared("own", tmp_path / "prepared")  # nothing of it in memory
    with whole_splits_unread():
        streamed = evaluate_keyword_spotter(model, data, batch_size=8)
    whole = keyword_spotter_reference(model, data)
    assert 0.4 < whole["test_accuracy"] < 1.0 and whole["baseline_majority_accuracy"] < 0.5
    assert_same_figures(streamed.metrics, whole)
    assert streamed.confusion == score_classifier(model, data, "test").confusion


# --- GAN ----------------------------------------------------------------------------------------


def gan_reference(generator, train, test, pixel_max, seed=0):
    """The whole-split computation: every image set as one array."""

    def features(images):
        return images.reshape(len(images), -1).astype("float64") / pixel_max

    def frechet(a, b):
        eps = 1e-6 * np.eye(a.shape[1])
        cov_a, cov_b = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
        root = linalg.sqrtm(cov_a @ cov_b)
        root = root.real if np.iscomplexobj(root) else root
        return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root))

    def digits(images):
        p = np.clip(judge.predict_proba(images), 1e-12, 1.0)
        kl = np.sum(p * (np.log(p) - np.log(p.mean(axis=0, keepdims=True))), axis=1)
        return float(np.exp(kl.mean()))

    rng = np.random.default_rng(seed + 1)
    real_train, real_test = features(np.asarray(train.x)), features(np.asarray(test.x))
    fake = features(generate(generator, len(real_test), seed))
    noise = rng.uniform(0.0, 1.0, fake.shape)
    gaussian = rng.normal(real_train.mean(axis=0), real_train.std(axis=0), fake.shape)
    independent = np.clip(gaussian, 0.0, 1.0)
    judge = LogisticRegression(max_iter=2000).fit(real_train, np.asarray(train.y).reshape(-1))
    return {
        "test_digits_score": digits(fake),
        "baseline_noise_digits_score": digits(noise),
        "baseline_pixel_gaussian_digits_score": digits(independent),
        "reference_test_digits_score": digits(real_test),
        "test_frechet_distance": frechet(fake, real_test),
        "baseline_noise_frechet_distance": frechet(noise, real_test),
        "baseline_pixel_gaussian_frechet_distance": frechet(independent, real_test),
        "reference_train_test_frechet_distance": frechet(real_train, real_test),
        "test_generated_pixel_std": float(fake.std(axis=0).mean()),
    }


def test_gan_streams_the_figures_it_computed_whole(roots):
    data = prepared(roots, "digits")
    generator, config = untrained("gan", "gan_small", data)
    train, test, pixel_max = data.splits["train"], data.splits["test"], config.inputs.pixel_max
    with whole_splits_unread():
        streamed = gan_metrics(generator, train, test, pixel_max, batch_size=BATCH)
    assert_same_figures(streamed, gan_reference(generator, train, test, pixel_max))


# --- autoencoder --------------------------------------------------------------------------------


def autoencoder_reference(model, data, config, split="test"):
    """The whole-split computation: each split's normal and anomalous images as arrays."""
    pixel_max, label = config.inputs.pixel_max, config.anomaly_class

    def images(name, normal=True):
        x, y = np.asarray(data.splits[name].x), np.asarray(data.splits[name].y).reshape(-1)
        return x[(y != label) == normal]

    def squared(diff):  # per image
        return np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)

    def errors(x):
        reconstruction = np.asarray(model.predict(x, batch_size=256, verbose=0))
        return squared(x.astype("float32") / pixel_max - reconstruction)

    mean = images("train").astype("float32").mean(axis=0) / pixel_max

    def mean_errors(x):
        return squared(x.astype("float32") / pixel_max - mean[None])

    def anomaly(normal_scores, anomaly_scores, threshold, prefix):
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

    normal_x, anomaly_x = images(split), images(split, normal=False)
    found = errors(normal_x)
    threshold = float(np.percentile(errors(images("val")), config.threshold_percentile))
    metrics = {
        "test_reconstruction_mse": float(found.mean()),
        "baseline_mean_image_mse": float(mean_errors(normal_x).mean()),
        "anomaly_threshold": threshold,
    }
    if config.mode == "denoise":
        noise = np.random.default_rng(0).normal(0.0, config.noise_stddev, normal_x.shape)
        noisy = (np.clip(normal_x / pixel_max + noise, 0.0, 1.0) * pixel_max).astype("float32")
        denoised = np.asarray(model.predict(noisy, batch_size=256, verbose=0))
        metrics["test_denoising_mse"] = float(np.mean((denoised - normal_x / pixel_max) ** 2))
        metrics["baseline_noisy_input_mse"] = float(np.mean(((noisy - normal_x) / pixel_max) ** 2))
    metrics |= anomaly(found, errors(anomaly_x), threshold, "anomaly_")
    baseline = anomaly(mean_errors(normal_x), mean_errors(anomaly_x), 0.0, "")
    metrics["baseline_mean_image_roc_auc"] = baseline["roc_auc"]
    return metrics


@pytest.mark.parametrize("preset", ["autoencoder_dense_small", "autoencoder_denoise_small"])
def test_autoencoder_streams_the_figures_it_computed_whole(roots, preset):
    data = prepared(roots, "digits")
    # half the validation errors above the threshold: anomalies and normal images both flagged
    model, config = untrained("autoencoder", preset, data, anomaly_class=9, threshold_percentile=50)
    with whole_splits_unread():
        streamed = autoencoder_metrics(model, data, config, batch_size=BATCH)
    whole = autoencoder_reference(model, data, config)
    assert 0 < whole["anomaly_precision"] < 1 and 0 < whole["anomaly_false_positive_rate"] < 1
    assert_same_figures(streamed, whole)


# --- detector -----------------------------------------------------------------------------------


def detector_reference(model, data, split="test", iou=0.5):
    """The whole-split computation: every image's detections and every true box in memory."""
    truths, classes = np.asarray(data.splits[split].y), data.manifest.classes
    outputs = predict(model, data.splits[split])
    found = [
        Detections(outputs["boxes"][i, :n], outputs["classes"][i, :n], outputs["scores"][i, :n])
        for i, n in enumerate(np.asarray(outputs["num_detections"]).astype(int))
    ]

    def mean_ap(detections):
        per_class = []
        for label in range(len(classes)):
            hits = [match_image(d, t, label, iou) for d, t in zip(detections, truths, strict=True)]
            scores = [np.sort(d.scores[d.classes == label])[::-1] for d in detections]
            count = int(np.sum(truths[..., 4] == label))
            per_class.append(average_precision(np.concatenate(scores), np.concatenate(hits), count))
        present = [ap for ap in per_class if not np.isnan(ap)]
        return (float(np.mean(present)) if present else 0.0), per_class

    rng, per_image = np.random.default_rng(0), int(model.get_layer("nms").max_detections)
    train = np.asarray(data.splits["train"].y)
    real = train[train[..., 4] >= 0]
    sizes = np.stack([real[:, 2] - real[:, 0], real[:, 3] - real[:, 1]], axis=-1)
    guesses = []
    for _ in range(len(truths)):
        size = sizes[rng.integers(len(sizes), size=per_image)]
        top_left = rng.uniform(0, 1, (per_image, 2)) * (1 - size)
        boxes = np.concatenate([top_left, top_left + size], axis=-1)
        labels = rng.integers(len(classes), size=per_image)
        guesses.append(Detections(boxes, labels, rng.uniform(0, 1, per_image)))
    score, per_class = mean_ap(found)
    metrics = {"test_map50": score, "baseline_random_map50": mean_ap(guesses)[0]}
    metrics["test_detections_per_image"] = float(np.mean([len(d.scores) for d in found]))
    for name, ap in zip(classes, per_class, strict=True):
        if not np.isnan(ap):
            metrics[f"test_ap50_{name}"] = ap
    return metrics


def test_detector_streams_the_figures_it_computed_whole(roots):
    data = prepared(roots, "detection_digits", {"num_images": 400})
    model, _ = untrained("detector", "detector_tiny", data)
    with whole_splits_unread():
        streamed = evaluate_detector(model, data, batch_size=BATCH)
    whole = detector_reference(model, data)
    assert whole["test_map50"] > 0 and whole["baseline_random_map50"] > 0
    assert_same_figures(streamed.metrics, whole)
