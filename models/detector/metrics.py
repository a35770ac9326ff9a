"""Detection metrics: VOC-style mean average precision at an IoU threshold, and its baseline.

Average precision per class is the area under the all-point interpolated precision/recall
curve of that class's detections ranked by score (PASCAL VOC 2010+); a detection is a true
positive when it overlaps a still unmatched true box of its class by IoU >= the threshold.
mAP averages it over the classes present in the split. The baseline scores random boxes the
same way: as many per image as the detector returns, sizes drawn from the training boxes,
uniform positions, classes and scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from kerasops.data import PreparedData
from kerasops.models.evaluation import Evaluation, predict


@dataclasses.dataclass(frozen=True)
class Detections:
    """One image's detections: boxes (D, 4) [ymin, xmin, ymax, xmax], classes (D,), scores (D,)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (P, 4) and b (Q, 4): (P, Q)."""
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)  # (P, Q)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_image(found: Detections, truth: np.ndarray, label: int, iou: float) -> np.ndarray:
    """True-positive flags of `found`'s boxes of class `label` against `truth` (M, 5) rows,
    best score first; each true box matches at most one detection."""
    mine = np.flatnonzero(found.classes == label)
    mine = mine[np.argsort(-found.scores[mine], kind="stable")]
    targets = truth[truth[:, 4] == label, :4]  # (T, 4)
    hits = np.zeros(len(mine), dtype=bool)
    if not len(targets) or not len(mine):
        return hits
    overlaps = box_iou(found.boxes[mine], targets)  # (D_label, T)
    taken = np.zeros(len(targets), dtype=bool)
    for i, row in enumerate(overlaps):
        row = np.where(taken, -1.0, row)
        best = int(np.argmax(row))
        if row[best] >= iou:
            hits[i] = taken[best] = True
    return hits


def average_precision(scores: np.ndarray, hits: np.ndarray, num_truth: int) -> float:
    """All-point interpolated AP of detections (scores, true-positive flags) over `num_truth`."""
    if num_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = np.concatenate([[0.0], tp / num_truth, [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(
    detections: Sequence[Detections], truths: np.ndarray, num_classes: int, iou: float = 0.5
) -> tuple[float, list[float]]:
    """(mAP, AP per class) of per-image detections against padded truths (N, M, 5).

    Classes absent from `truths` get AP nan and are left out of the mean.
    """
    per_class = []
    for label in range(num_classes):
        scores, hits = [], []
        for found, truth in zip(detections, truths, strict=True):
            hits.append(match_image(found, truth, label, iou))
            mine = found.scores[found.classes == label]
            scores.append(np.sort(mine)[::-1])  # the order match_image ranks them in
        num_truth = int(np.sum(truths[..., 4] == label))
        per_class.append(average_precision(np.concatenate(scores), np.concatenate(hits), num_truth))
    present = [ap for ap in per_class if not np.isnan(ap)]
    return (float(np.mean(present)) if present else 0.0), per_class


def random_detections(
    count: int, per_image: int, train_truths: np.ndarray, num_classes: int, seed: int = 0
) -> list[Detections]:
    """`per_image` random boxes for each of `count` images: training box sizes, uniform places,
    classes and scores."""
    rng = np.random.default_rng(seed)
    real = train_truths[train_truths[..., 4] >= 0]  # (T, 5)
    sizes = np.stack([real[:, 2] - real[:, 0], real[:, 3] - real[:, 1]], axis=-1)  # (T, 2)
    result = []
    for _ in range(count):
        size = sizes[rng.integers(len(sizes), size=per_image)]  # (D, 2)
        top_left = rng.uniform(0, 1, (per_image, 2)) * (1 - size)
        boxes = np.concatenate([top_left, top_left + size], axis=-1)
        classes = rng.integers(num_classes, size=per_image)
        result.append(Detections(boxes, classes, rng.uniform(0, 1, per_image)))
    return result


def model_detections(model: keras.Model, prepared: PreparedData, split: str) -> list[Detections]:
    """The detector's valid detections for each image of `split`."""
    outputs = predict(model, prepared.splits[split])
    return [
        Detections(outputs["boxes"][i, :n], outputs["classes"][i, :n], outputs["scores"][i, :n])
        for i, n in enumerate(np.asarray(outputs["num_detections"]).astype(int))
    ]


def evaluate_detector(
    model: keras.Model, prepared: PreparedData, split: str = "test", iou: float = 0.5
) -> Evaluation:
    """mAP@iou of the detector on `split`, AP per class, and the random-boxes baseline."""
    truths = np.asarray(prepared.splits[split].y)  # (N, M, 5)
    classes = prepared.manifest.classes
    found = model_detections(model, prepared, split)
    score, per_class = mean_average_precision(found, truths, len(classes), iou)
    per_image = int(model.get_layer("nms").max_detections)
    guesses = random_detections(len(truths), per_image, prepared.splits["train"].y, len(classes))
    baseline, _ = mean_average_precision(guesses, truths, len(classes), iou)
    tag = f"{int(round(iou * 100))}"
    metrics = {f"test_map{tag}": score, f"baseline_random_map{tag}": baseline}
    metrics["test_detections_per_image"] = float(np.mean([len(d.scores) for d in found]))
    for name, ap in zip(classes, per_class, strict=True):
        if not np.isnan(ap):
            metrics[f"test_ap{tag}_{name}"] = ap
    return Evaluation(metrics=metrics, classes=tuple(classes))
