"""Held-out metrics of the standard tasks: classification scores and forecast errors, each
against its baseline. Families with other tasks score themselves in their own recipe."""

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
