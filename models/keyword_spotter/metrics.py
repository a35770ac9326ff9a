"""Keyword-spotting metrics: accuracy and macro F1 against the majority class, on the test split
and on the held-out voice (`unseen_voice`) that no training clip was spoken in.

The majority class is the training split's most frequent keyword; its macro F1 is that of
always answering it (F1 of that one class, 0 for every other, averaged over the classes).
"""

from __future__ import annotations

import keras
import numpy as np
from sklearn.metrics import f1_score

from kerasops.data import PreparedData
from kerasops.models.evaluation import Evaluation, score_classifier

UNSEEN_VOICE = "unseen_voice"


def majority_macro_f1(y_true: np.ndarray, majority: int, num_classes: int) -> float:
    """Macro F1 (over `num_classes`) of answering `majority` for every example."""
    y_true = np.asarray(y_true).astype(int).reshape(-1)
    guesses = np.full_like(y_true, majority)
    labels = list(range(num_classes))
    return float(f1_score(y_true, guesses, labels=labels, average="macro", zero_division=0))


def evaluate_keyword_spotter(
    model: keras.Model, prepared: PreparedData, split: str = "test"
) -> Evaluation:
    """The classifier's test_* metrics and majority baseline on `split`; scoring the test split,
    the same on the `unseen_voice` split too (as unseen_voice_*), where the dataset has one."""
    classes = prepared.manifest.classes
    majority = int(np.bincount(np.asarray(prepared.splits["train"].y).astype(int)).argmax())
    scored = score_classifier(model, prepared, split)
    metrics = dict(scored.metrics)
    truth = np.asarray(prepared.splits[split].y)
    metrics["baseline_majority_macro_f1"] = majority_macro_f1(truth, majority, len(classes))
    if split == "test" and UNSEEN_VOICE in prepared.splits:
        held = score_classifier(model, prepared, UNSEEN_VOICE).metrics
        truth = np.asarray(prepared.splits[UNSEEN_VOICE].y)
        metrics["unseen_voice_accuracy"] = held["test_accuracy"]
        metrics["unseen_voice_macro_f1"] = held["test_macro_f1"]
        metrics["baseline_unseen_voice_majority_accuracy"] = held["baseline_majority_accuracy"]
        metrics["baseline_unseen_voice_majority_macro_f1"] = majority_macro_f1(
            truth, majority, len(classes)
        )
    return Evaluation(metrics=metrics, confusion=scored.confusion, classes=scored.classes)
