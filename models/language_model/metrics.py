"""The language model's baseline, in plain NumPy: the unigram model of the training text."""

from __future__ import annotations

import numpy as np


def unigram_log_probabilities(train_ids: np.ndarray, vocabulary_size: int) -> np.ndarray:
    """(V,) log p(id) of the training targets' id counts, add-one smoothed; id 0 (padding)
    is not a token and is not counted."""
    counts = np.bincount(train_ids[train_ids != 0].ravel(), minlength=vocabulary_size)
    counts = counts.astype("float64") + 1.0
    counts[0] = 0.0
    return np.log(np.where(counts > 0, counts / counts.sum(), 1.0))


def unigram_baseline(
    train_ids: np.ndarray, test_ids: np.ndarray, vocabulary_size: int
) -> dict[str, float]:
    """Perplexity and accuracy on `test_ids` of the model that ignores all context."""
    log_p = unigram_log_probabilities(train_ids, vocabulary_size)
    targets = test_ids[test_ids != 0]
    most_frequent = int(np.argmax(np.where(np.arange(vocabulary_size) == 0, -np.inf, log_p)))
    return {
        "baseline_unigram_perplexity": float(np.exp(-log_p[targets].mean())),
        "baseline_unigram_accuracy": float(np.mean(targets == most_frequent)),
    }
