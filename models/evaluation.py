"""Held-out metrics of the standard tasks: classification scores and forecast errors, each
against its baseline. Families with other tasks score themselves in their own recipe.

What a family needs to score a split in bounded memory is here too: classification figures
from a confusion matrix streamed batch by batch, and a strided sample of a split's examples
(for the figures that rank every example's score: percentiles, ROC AUC, average precision).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from kerasops.data import PreparedData, Split, make_tf_dataset


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Scalar metrics (logged to MLflow and metrics.json) plus the confusion matrix, if any."""

    metrics: dict[str, float]
    confusion: list[list[int]] | None = None
    classes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "confusion_matrix": self.confusion,
            "classes": list(self.classes),
        }


def predict(
    model: keras.Model, split: Split, batch_size: int = 256
) -> np.ndarray | dict[str, np.ndarray]:
    """Model outputs for every example of `split`, in order; a dict for named outputs."""
    dataset = make_tf_dataset(split, batch_size=batch_size, shuffle=False, cache=False)
    outputs = model.predict(dataset.map(lambda x, y: x), verbose=0)
    if isinstance(outputs, dict):
        return {name: np.asarray(values) for name, values in outputs.items()}
    return np.asarray(outputs)


def predict_rows(model: keras.Model, x: Any) -> Any:
    """Model outputs for the rows of one batch `x`. `predict`, not `predict_on_batch`: under a
    strategy of several replicas Keras 3.15's predict_on_batch returns each replica's rows
    concatenated (twice the rows on two devices)."""
    return model.predict(x, batch_size=max(len(x), 1), verbose=0)


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, train_labels: np.ndarray, classes: tuple
) -> Evaluation:
    """Accuracy, macro precision/recall/F1 and the majority-class baseline's accuracy."""
    y_true = y_true.astype(int).reshape(-1)
    y_pred = probabilities.argmax(axis=-1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    majority = np.bincount(train_labels.astype(int).reshape(-1)).argmax()
    labels = list(range(len(classes)))
    return Evaluation(
        metrics={
            "test_accuracy": float(accuracy_score(y_true, y_pred)),
            "test_macro_precision": float(precision),
            "test_macro_recall": float(recall),
            "test_macro_f1": float(f1),
            "baseline_majority_accuracy": float(np.mean(y_true == majority)),
        },
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        classes=tuple(classes),
    )


def precision_recall_f1(
    tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, as scikit-learn's precision_recall_fscore_support with zero_division=0 counts
    them: tp / predicted, tp / actual and 2 tp / (actual + predicted), 0 where one divides by 0."""
    tp, predicted, actual = (np.asarray(a, dtype=np.float64) for a in (tp, predicted, actual))

    def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)

    return divide(tp, predicted), divide(tp, actual), divide(2 * tp, actual + predicted)


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts (K, K) of class ids: rows true, columns predicted."""
    pairs = truth.astype(np.int64).reshape(-1) * num_classes + predicted.astype(np.int64).ravel()
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def streamed_confusion(
    model: keras.Model, split: Split, num_classes: int, batch_size: int = 256
) -> np.ndarray:
    """The classifier's confusion counts (K, K) on `split`, predicted batch by batch."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for x, y in split.batches(batch_size):
        probabilities = np.asarray(predict_rows(model, x))  # (B, K)
        confusion += confusion_counts(np.asarray(y), probabilities.argmax(axis=-1), num_classes)
    return confusion


def label_counts(split: Split, num_classes: int, batch_size: int = 1024) -> np.ndarray:
    """Examples of each class in `split` (K,), reading its labels batch by batch."""
    counts = np.zeros(num_classes, np.int64)
    for y in split.target_batches(batch_size):
        counts += np.bincount(np.asarray(y).astype(np.int64).reshape(-1), minlength=num_classes)
    return counts


def confusion_metrics(confusion: np.ndarray, majority: int, classes: tuple) -> Evaluation:
    """classification_metrics' figures from confusion counts (K, K) instead of every label:
    macro averages over the classes that are true or predicted at least once, and the
    accuracy of always answering `majority` (the training split's most frequent class)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    count = int(confusion.sum())
    tp, predicted, actual = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision, recall, f1 = precision_recall_f1(tp, predicted, actual)
    present = (predicted + actual) > 0

    def share(part: int) -> float:
        return float(part / count) if count else float("nan")

    return Evaluation(
        metrics={
            "test_accuracy": share(tp.sum()),
            "test_macro_precision": float(np.mean(precision[present])),
            "test_macro_recall": float(np.mean(recall[present])),
            "test_macro_f1": float(np.mean(f1[present])),
            "baseline_majority_accuracy": share(actual[majority]),
        },
        confusion=confusion.tolist(),
        classes=tuple(classes),
    )


class StridedSample:
    """Which examples of a split streamed in batches to keep: every `stride`-th, counted from
    the split's first, so that at most `limit` of its `count` examples are kept (all of them
    when count <= limit), the same ones whatever the batch size."""

    def __init__(self, count: int, limit: int) -> None:
        self.stride = max(1, -(-count // max(1, limit)))  # ceil
        self.seen = 0

    def pick(self, size: int) -> np.ndarray:
        """Flags (size,) of the next `size` examples: True for those kept."""
        picked = (self.seen + np.arange(size)) % self.stride == 0
        self.seen += size
        return picked


# Examples of a split whose per-example scores are kept for the figures that rank them all
# (percentiles, ROC AUC, average precision); a larger split keeps a StridedSample of them.
MAX_SCORED_EXAMPLES = 1_000_000


def forecast_metrics(windows: np.ndarray, y_true: np.ndarray, forecast: np.ndarray) -> Evaluation:
    """MAE and RMSE of the forecast and of the naive last-value forecast."""
    y_true = y_true.reshape(forecast.shape)
    naive = np.repeat(windows[:, -1, :1], forecast.shape[-1], axis=1)  # (N, H)

    def errors(prediction: np.ndarray) -> tuple[float, float]:
        diff = prediction - y_true
        return float(np.mean(np.abs(diff))), float(np.sqrt(np.mean(diff**2)))

    mae, rmse = errors(forecast)
    naive_mae, naive_rmse = errors(naive)
    return Evaluation(
        metrics={
            "test_mae": mae,
            "test_rmse": rmse,
            "baseline_naive_mae": naive_mae,
            "baseline_naive_rmse": naive_rmse,
            "test_mae_skill": 1.0 - mae / naive_mae if naive_mae else 0.0,
        }
    )


def score_classifier(model: keras.Model, prepared: PreparedData, split: str) -> Evaluation:
    """Classification metrics of `model` on one split (majority class of train as baseline)."""
    data = prepared.splits[split]
    probabilities = predict(model, data)
    train_labels = prepared.splits["train"].y
    return classification_metrics(data.y, probabilities, train_labels, prepared.manifest.classes)


def score_forecaster(model: keras.Model, prepared: PreparedData, split: str) -> Evaluation:
    """Forecast errors of `model` on one split (naive last value as baseline)."""
    data = prepared.splits[split]
    return forecast_metrics(np.asarray(data.x), np.asarray(data.y), predict(model, data))


# How the standard recipe scores each task it trains.
TASK_SCORES = {"classification": score_classifier, "regression": score_forecaster}


def evaluate_task(model: keras.Model, prepared: PreparedData, split: str = "test") -> Evaluation:
    """Score `model` on one split with the metrics of the dataset's task (TASK_SCORES)."""
    return TASK_SCORES[prepared.manifest.task](model, prepared, split)
