"""Scores of the GAN: two small-image stand-ins for the Inception-based scores, each against the
same baselines (uniform noise images, and independent per-pixel Gaussians with the training
means and deviations) and the real test images as the reference:

- digits score: an Inception Score computed with a logistic-regression digit classifier (the
  judge, fitted on the training split): exp(E[KL(p(y|x) || p(y))]), from 1 (every image looks
  the same or like no digit) to the number of classes (every image a confident digit, all
  digits equally often);
- Fréchet distance between generated and test images on pixel features (lower is better).

Every image set is streamed batch by batch into running sums: a mean and covariance per set,
and the judge's sums of p log p and of p. The judge is fitted on the training images, or on an
evenly strided sample of them when they hold more than MAX_JUDGE_VALUES pixel values.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy import linalg
from sklearn.linear_model import LogisticRegression

from kerasops.data import Split
from kerasops.models.evaluation import StridedSample, predict_rows

MAX_JUDGE_VALUES = 2**25  # pixel values (float64: 256 MiB) the judge is fitted on at most


class Moments:
    """Running count, mean and scatter of feature rows, merged batch by batch (Chan et al.)."""

    def __init__(self) -> None:
        self.count, self.mean, self.scatter = 0, 0.0, 0.0

    def add(self, rows: np.ndarray) -> None:
        """Merge rows (B, D)."""
        if not len(rows):
            return
        n, batch_mean = len(rows), rows.mean(axis=0)
        centered = rows - batch_mean  # (B, D)
        delta, total = batch_mean - self.mean, self.count + n
        between = np.outer(delta, delta) * (self.count * n / total)  # (D, D)
        self.scatter = self.scatter + centered.T @ centered + between
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def covariance(self) -> np.ndarray:
        """As np.cov(rows, rowvar=False): (D, D), divided by count - 1."""
        return self.scatter / (self.count - 1)

    def std(self) -> np.ndarray:
        """As rows.std(axis=0): (D,), divided by count."""
        return np.sqrt(np.diag(self.scatter) / self.count)


class JudgeScore:
    """The judge's running sums over a set of images, for its digits score."""

    def __init__(self, judge: LogisticRegression) -> None:
        self.judge = judge
        self.count, self.p_log_p, self.p_sum = 0, 0.0, 0.0

    def add(self, features: np.ndarray) -> None:
        """Merge the images of features (B, D)."""
        if not len(features):
            return
        probabilities = np.clip(self.judge.predict_proba(features), 1e-12, 1.0)  # (B, K)
        self.count += len(probabilities)
        self.p_log_p += float(np.sum(probabilities * np.log(probabilities)))
        self.p_sum = self.p_sum + probabilities.sum(axis=0)  # (K,)

    def score(self) -> float:
        """exp(E_x[KL(p(y|x) || p(y))]) = exp(E_x[sum p log p] - sum p(y) log p(y))."""
        marginal = self.p_sum / self.count  # (K,)
        return float(np.exp(self.p_log_p / self.count - np.sum(marginal * np.log(marginal))))


def frechet_distance(a: Moments, b: Moments) -> float:
    """Fréchet distance between the Gaussians of two sets of feature rows."""
    eps = 1e-6 * np.eye(len(a.mean))
    cov_a = a.covariance() + eps
    cov_b = b.covariance() + eps
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(np.sum((a.mean - b.mean) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def pixel_features(images: np.ndarray, pixel_max: float) -> np.ndarray:
    """Images as flat vectors in [0, 1]: (N, H*W*C)."""
    return images.reshape(len(images), -1).astype("float64") / pixel_max


def generate(generator: keras.Model, count: int, seed: int) -> np.ndarray:
    """`count` images from fixed-seed standard-normal noise."""
    latent_dim = generator.input_shape[-1]
    noise = np.random.default_rng(seed).normal(size=(count, latent_dim)).astype("float32")
    return np.asarray(generator.predict(noise, batch_size=256, verbose=0))


def fit_judge(
    train: Split, pixel_max: float, batch_size: int
) -> tuple[LogisticRegression, Moments]:
    """The judge fitted on the training images (or a strided sample), and their moments."""
    moments, sample, features, labels = Moments(), None, [], []
    for x, y in train.batches(batch_size):
        rows = pixel_features(np.asarray(x), pixel_max)  # (B, D)
        moments.add(rows)
        sample = sample or StridedSample(len(train), MAX_JUDGE_VALUES // max(1, rows.shape[1]))
        picked = sample.pick(len(rows))
        features.append(rows[picked])
        labels.append(np.asarray(y).reshape(-1)[picked])
    judge = LogisticRegression(max_iter=2000)
    return judge.fit(np.concatenate(features), np.concatenate(labels)), moments


def gan_metrics(
    generator: keras.Model,
    train: Split,
    test: Split,
    pixel_max: float,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Digits score and Fréchet pixel distance of generated images, with baselines."""
    judge, real_train = fit_judge(train, pixel_max, batch_size)
    sets = ("fake", "noise", "independent", "real_test")
    moments = {name: Moments() for name in sets}
    scores = {name: JudgeScore(judge) for name in sets}
    for x, _ in test.batches(batch_size):
        rows = pixel_features(np.asarray(x), pixel_max)
        moments["real_test"].add(rows)
        scores["real_test"].add(rows)
    latent_dim = generator.input_shape[-1]
    latent = np.random.default_rng(seed)  # as `generate` draws its noise
    uniform = np.random.default_rng(seed + 1)
    # the Gaussians were drawn from the same generator right after every uniform value (one
    # 64-bit draw each), so their stream starts that many draws on
    gaussian = np.random.default_rng(seed + 1)
    gaussian.bit_generator.advance(len(test) * len(real_train.mean))
    mean, std = real_train.mean, real_train.std()
    for start in range(0, len(test), batch_size):
        count = min(batch_size, len(test) - start)
        noise = latent.normal(size=(count, latent_dim)).astype("float32")
        images = {
            "fake": pixel_features(np.asarray(predict_rows(generator, noise)), pixel_max),
            "noise": uniform.uniform(0.0, 1.0, (count, len(mean))),
            "independent": np.clip(gaussian.normal(mean, std, (count, len(mean))), 0.0, 1.0),
        }
        for name, rows in images.items():
            moments[name].add(rows)
            scores[name].add(rows)
    return {
        "test_digits_score": scores["fake"].score(),
        "baseline_noise_digits_score": scores["noise"].score(),
        "baseline_pixel_gaussian_digits_score": scores["independent"].score(),
        "reference_test_digits_score": scores["real_test"].score(),
        "test_frechet_distance": frechet_distance(moments["fake"], moments["real_test"]),
        "baseline_noise_frechet_distance": frechet_distance(moments["noise"], moments["real_test"]),
        "baseline_pixel_gaussian_frechet_distance": frechet_distance(
            moments["independent"], moments["real_test"]
        ),
        "reference_train_test_frechet_distance": frechet_distance(real_train, moments["real_test"]),
        "test_generated_pixel_std": float(moments["fake"].std().mean()),
    }
