"""The translator's scores, in plain NumPy: exact match and a character-level corpus BLEU,
each against copying the input."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


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
