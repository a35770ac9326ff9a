"""Scores of the GAN: two small-image stand-ins for the Inception-based scores, each against the
same baselines (uniform noise images, and independent per-pixel Gaussians with the training
means and deviations) and the real test images as the reference:

- digits score: an Inception Score computed with a logistic-regression digit classifier (the
  judge, fitted on the training split): exp(E[KL(p(y|x) || p(y))]), from 1 (every image looks
  the same or like no digit) to the number of classes (every image a confident digit, all
  digits equally often);
- Fréchet distance between generated and test images on pixel features (lower is better).
"""

from __future__ import annotations

import keras
import numpy as np
from scipy import linalg
from sklearn.linear_model import LogisticRegression

from kerasops.data import Split


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
