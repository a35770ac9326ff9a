"""Scores of sequence models, in plain NumPy: perplexity against a unigram model, exact match
and a character-level corpus BLEU against copying the input."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

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


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU over characters (clipped n-gram precisions for n = 1..max_n, geometric mean,
    brevity penalty), in [0, 1]. Characters, since a target such as `2021-03-03` is one word."""
    matched, total = [0] * max_n, [0] * max_n
    reference_length = hypothesis_length = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = list(reference), list(hypothesis)
        reference_length, hypothesis_length = (
            reference_length + len(ref),
            hypothesis_length + len(hyp),
        )
        for n in range(1, max_n + 1):
            ref_counts, hyp_counts = _ngrams(ref, n), _ngrams(hyp, n)
            matched[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if hypothesis_length == 0 or min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / max_n
    brevity = min(1.0, math.exp(1.0 - reference_length / hypothesis_length))
    return brevity * math.exp(log_precision)


def translation_scores(
    sources: Sequence[str], references: Sequence[str], translations: Sequence[str]
) -> dict[str, float]:
    """Exact match and BLEU of the translations, and of copying each source unchanged."""
    exact = np.mean([t == r for t, r in zip(translations, references, strict=True)])
    copied = np.mean([s == r for s, r in zip(sources, references, strict=True)])
    return {
        "test_exact_match": float(exact),
        "test_bleu": corpus_bleu(references, translations),
        "baseline_copy_exact_match": float(copied),
        "baseline_copy_bleu": corpus_bleu(references, sources),
    }
