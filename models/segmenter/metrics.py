"""Segmentation metrics: per-pixel confusion, IoU and pixel accuracy, and their baseline.

IoU of a class is TP / (TP + FP + FN) over every pixel of the split; mean IoU averages it over
the classes present in the truth or the prediction (background included). Pixel accuracy is the
fraction of pixels given their true class; per class it is that class's recall. The baseline
predicts the background (class 0) everywhere, which a segmenter must beat on mean IoU.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasops.data import PreparedData
from kerasops.models.evaluation import Evaluation, confusion_counts, predict_rows


def confusion_scores(confusion: np.ndarray) -> dict[str, np.ndarray | float]:
    """IoU and pixel accuracy per class (nan for a class never seen nor predicted), mean IoU
    over the classes that have any, and the overall pixel accuracy."""
    tp = np.diag(confusion).astype(np.float64)
    truth, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    union = truth + predicted - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    recall = np.where(truth > 0, tp / np.maximum(truth, 1), np.nan)
    present = iou[~np.isnan(iou)]
    return {
        "iou": iou,
        "pixel_accuracy": recall,
        "mean_iou": float(present.mean()) if present.size else 0.0,
        "overall_pixel_accuracy": float(tp.sum() / max(confusion.sum(), 1)),
    }


def model_confusion(
    model: keras.Model, prepared: PreparedData, split: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(model's, all-background baseline's) confusion (K, K) on `split`, streamed by batch."""
    k = len(prepared.manifest.classes)
    found, baseline = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
    for x, y in prepared.splits[split].batches(batch_size):
        mask = predict_rows(model, x)["mask"]  # (B, H, W)
        found += confusion_counts(np.asarray(y), np.asarray(mask), k)
        baseline += confusion_counts(np.asarray(y), np.zeros_like(y), k)
    return found, baseline


def segmentation_metrics(
    found: np.ndarray, baseline: np.ndarray, classes: tuple[str, ...]
) -> dict[str, float]:
    """test_* and baseline_background_* figures: mean IoU, pixel accuracy, both per class."""
    metrics: dict[str, float] = {}
    for prefix, confusion in (("test_", found), ("baseline_background_", baseline)):
        scores = confusion_scores(confusion)
        metrics[f"{prefix}mean_iou"] = scores["mean_iou"]
        metrics[f"{prefix}pixel_accuracy"] = scores["overall_pixel_accuracy"]
        for name, iou, accuracy in zip(
            classes, scores["iou"], scores["pixel_accuracy"], strict=True
        ):
            if not np.isnan(iou):
                metrics[f"{prefix}iou_{name}"] = float(iou)
            if not np.isnan(accuracy):
                metrics[f"{prefix}pixel_accuracy_{name}"] = float(accuracy)
    return metrics


def evaluate_segmenter(
    model: keras.Model, prepared: PreparedData, split: str = "test"
) -> Evaluation:
    """Mean IoU and pixel accuracy (overall and per class) of the segmenter on `split`, beside
    the all-background baseline's; the pixel confusion matrix rides along."""
    classes = tuple(prepared.manifest.classes)
    found, baseline = model_confusion(model, prepared, split)
    metrics = segmentation_metrics(found, baseline, classes)
    return Evaluation(metrics=metrics, confusion=found.tolist(), classes=classes)
