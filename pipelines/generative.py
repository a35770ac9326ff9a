"""Scores for the autoencoder and the GAN, and the per-epoch sample grid logged to MLflow.

Autoencoder: reconstruction MSE against the training mean image; anomaly detection of a class
held out of training, with the threshold chosen on validation data only.
GAN: two small-image stand-ins for the Inception-based scores, each against the same baselines
(uniform noise images, and independent per-pixel Gaussians with the training means and
deviations) and the real test images as the reference:
- digits score: an Inception Score computed with a logistic-regression digit classifier (the
  judge, fitted on the training split): exp(E[KL(p(y|x) || p(y))]), from 1 (every image looks
  the same or like no digit) to the number of classes (every image a confident digit, all
  digits equally often);
- Fréchet distance between generated and test images on pixel features (lower is better).
"""

from __future__ import annotations

import keras
import mlflow
import numpy as np
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from data import Split


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


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of `a` and `b` (N, D)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    eps = 1e-6 * np.eye(a.shape[1])
    cov_a = np.cov(a, rowvar=False) + eps
    cov_b = np.cov(b, rowvar=False) + eps
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def pixel_features(images: np.ndarray, pixel_max: float) -> np.ndarray:
    """Images as flat vectors in [0, 1]: (N, H*W*C)."""
    return images.reshape(len(images), -1).astype("float64") / pixel_max


def generate(generator: keras.Model, count: int, seed: int) -> np.ndarray:
    """`count` images from fixed-seed standard-normal noise."""
    latent_dim = generator.input_shape[-1]
    noise = np.random.default_rng(seed).normal(size=(count, latent_dim)).astype("float32")
    return np.asarray(generator.predict(noise, batch_size=256, verbose=0))


def digits_score(judge: LogisticRegression, features: np.ndarray) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) with the judge's class probabilities."""
    probabilities = np.clip(judge.predict_proba(features), 1e-12, 1.0)  # (N, K)
    marginal = probabilities.mean(axis=0, keepdims=True)  # (1, K)
    kl = np.sum(probabilities * (np.log(probabilities) - np.log(marginal)), axis=1)  # (N,)
    return float(np.exp(kl.mean()))


def gan_metrics(
    generator: keras.Model, train: Split, test: Split, pixel_max: float, seed: int = 0
) -> dict[str, float]:
    """Digits score and Fréchet pixel distance of generated images, with baselines."""
    rng = np.random.default_rng(seed + 1)
    real_train = pixel_features(np.asarray(train.x), pixel_max)
    real_test = pixel_features(np.asarray(test.x), pixel_max)
    count = len(real_test)
    fake = pixel_features(generate(generator, count, seed), pixel_max)
    noise = rng.uniform(0.0, 1.0, fake.shape)
    independent = np.clip(
        rng.normal(real_train.mean(axis=0), real_train.std(axis=0), fake.shape), 0.0, 1.0
    )
    judge = LogisticRegression(max_iter=2000).fit(real_train, np.asarray(train.y).reshape(-1))
    return {
        "test_digits_score": digits_score(judge, fake),
        "baseline_noise_digits_score": digits_score(judge, noise),
        "baseline_pixel_gaussian_digits_score": digits_score(judge, independent),
        "reference_test_digits_score": digits_score(judge, real_test),
        "test_frechet_distance": frechet_distance(fake, real_test),
        "baseline_noise_frechet_distance": frechet_distance(noise, real_test),
        "baseline_pixel_gaussian_frechet_distance": frechet_distance(independent, real_test),
        "reference_train_test_frechet_distance": frechet_distance(real_train, real_test),
        "test_generated_pixel_std": float(fake.std(axis=0).mean()),
    }


def sample_grid(images: np.ndarray, pixel_max: float, columns: int = 8, zoom: int = 4):
    """Tile images (N, H, W, 1) into one uint8 picture, each pixel enlarged `zoom` times."""
    count, height, width = images.shape[:3]
    rows = -(-count // columns)
    canvas = np.zeros((rows * (height + 1), columns * (width + 1)), dtype="float32")
    for i, image in enumerate(images[..., 0]):
        top, left = (i // columns) * (height + 1), (i % columns) * (width + 1)
        canvas[top : top + height, left : left + width] = image
    canvas = np.clip(canvas / pixel_max, 0.0, 1.0)
    return (np.kron(canvas, np.ones((zoom, zoom))) * 255).astype("uint8")


class SampleGridLogger(keras.callbacks.Callback):
    """Log a grid of images from fixed noise to MLflow after every epoch (key `samples`)."""

    def __init__(self, generator: keras.Model, pixel_max: float, count: int = 32, seed: int = 0):
        super().__init__()
        self.generator = generator
        self.pixel_max = pixel_max
        self.count = count
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        if mlflow.active_run() is None:
            return
        images = generate(self.generator, self.count, self.seed)
        mlflow.log_image(sample_grid(images, self.pixel_max), key="samples", step=epoch)
