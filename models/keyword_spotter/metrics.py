"""Keyword-spotting metrics: accuracy and macro F1 against the majority class, on the test split
and on the held-out voice (`unseen_voice`) that no training clip was spoken in.

The majority class is the training split's most frequent keyword; its macro F1 is that of
always answering it (F1 of that one class, 0 for every other, averaged over the classes).
Every figure comes from counts: the clips are predicted batch by batch into a confusion matrix,
and the training split is read for its labels only.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasops.data import PreparedData
from kerasops.models.evaluation import (
    Evaluation,
    confusion_metrics,
    label_counts,
    precision_recall_f1,
    streamed_confusion,
)

UNSEEN_VOICE = "unseen_voice"


def majority_macro_f1(counts: np.ndarray, majority: int) -> float:
    """Macro F1, over every class of `counts` (K,) (the examples of each class), of answering
    `majority` for every example."""
    counts = np.asarray(counts, dtype=np.int64)
    predicted = np.zeros_like(counts)
    predicted[majority] = counts.sum()
    tp = np.where(np.arange(len(counts)) == majority, counts, 0)
    return float(np.mean(precision_recall_f1(tp, predicted, counts)[2]))


def evaluate_keyword_spotter(
    model: keras.Model, prepared: PreparedData, split: str = "test", batch_size: int = 256
) -> Evaluation:
    """The classifier's test_* metrics and majority baseline on `split`; scoring the test split,
    the same on the `unseen_voice` split too (as unseen_voice_*), where the dataset has one."""
    classes = prepared.manifest.classes
    majority = int(np.argmax(label_counts(prepared.splits["train"], len(classes))))
    confusion = streamed_confusion(model, prepared.splits[split], len(classes), batch_size)
    scored = confusion_metrics(confusion, majority, classes)
    metrics = dict(scored.metrics)
    metrics["baseline_majority_macro_f1"] = majority_macro_f1(confusion.sum(axis=1), majority)
    if split == "test" and UNSEEN_VOICE in prepared.splits:
        held_out = streamed_confusion(
            model, prepared.splits[UNSEEN_VOICE], len(classes), batch_size
        )
        held = confusion_metrics(held_out, majority, classes).metrics
        metrics["unseen_voice_accuracy"] = held["test_accuracy"]
        metrics["unseen_voice_macro_f1"] = held["test_macro_f1"]
        metrics["baseline_unseen_voice_majority_accuracy"] = held["baseline_majority_accuracy"]
        metrics["baseline_unseen_voice_majority_macro_f1"] = majority_macro_f1(
            held_out.sum(axis=1), majority
        )
    return Evaluation(metrics=metrics, confusion=scored.confusion, classes=scored.classes)
