"""Detection metrics: VOC-style mean average precision at an IoU threshold, and its baseline.

Average precision per class is the area under the all-point interpolated precision/recall
curve of that class's detections ranked by score (PASCAL VOC 2010+); a detection is a true
positive when it overlaps a still unmatched true box of its class by IoU >= the threshold.
mAP averages it over the classes present in the split. The baseline scores random boxes the
same way: as many per image as the detector returns, sizes drawn from the training boxes,
uniform positions, classes and scores.

A split is streamed batch by batch: each image's detections are matched against its own true
boxes, and only the ranked (score, true positive) pairs are kept, of every image while the
split has at most MAX_SCORED_EXAMPLES of them (of an evenly strided sample beyond that).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence

import keras
import numpy as np

from kerasops.data import PreparedData, Split
from kerasops.models.evaluation import MAX_SCORED_EXAMPLES, Evaluation, StridedSample, predict_rows


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


class RankedDetections:
    """Detections matched image by image, for average precision: per class the scores and
    true-positive flags, and the number of true boxes."""

    def __init__(self, num_classes: int, iou: float = 0.5) -> None:
        self.iou = iou
        self.scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.hits: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.truths = np.zeros(num_classes, np.int64)

    def add(self, found: Detections, truth: np.ndarray) -> None:
        """Match one image's detections against its padded true boxes (M, 5)."""
        for label in range(len(self.truths)):
            self.hits[label].append(match_image(found, truth, label, self.iou))
            mine = found.scores[found.classes == label]
            self.scores[label].append(np.sort(mine)[::-1])  # the order match_image ranks them in
            self.truths[label] += int(np.sum(truth[:, 4] == label))

    def mean_average_precision(self) -> tuple[float, list[float]]:
        """(mAP, AP per class); classes without a true box get AP nan and are left out."""
        per_class = [
            average_precision(np.concatenate(scores), np.concatenate(hits), int(count))
            for scores, hits, count in zip(self.scores, self.hits, self.truths, strict=True)
        ]
        present = [ap for ap in per_class if not np.isnan(ap)]
        return (float(np.mean(present)) if present else 0.0), per_class


def mean_average_precision(
    detections: Sequence[Detections], truths: np.ndarray, num_classes: int, iou: float = 0.5
) -> tuple[float, list[float]]:
    """(mAP, AP per class) of per-image detections against padded truths (N, M, 5).

    Classes absent from `truths` get AP nan and are left out of the mean.
    """
    ranked = RankedDetections(num_classes, iou)
    for found, truth in zip(detections, truths, strict=True):
        ranked.add(found, truth)
    return ranked.mean_average_precision()


def box_sizes(truths: np.ndarray) -> np.ndarray:
    """Heights and widths (T, 2) of the real boxes of padded truths (N, M, 5), in order."""
    real = truths[truths[..., 4] >= 0]  # (T, 5)
    return np.stack([real[:, 2] - real[:, 0], real[:, 3] - real[:, 1]], axis=-1)


def random_boxes(
    per_image: int, sizes: np.ndarray, num_classes: int, seed: int = 0
) -> Iterator[Detections]:
    """`per_image` random boxes for image after image: sizes drawn from `sizes` (T, 2),
    uniform places, classes and scores."""
    rng = np.random.default_rng(seed)
    while True:
        size = sizes[rng.integers(len(sizes), size=per_image)]  # (D, 2)
        top_left = rng.uniform(0, 1, (per_image, 2)) * (1 - size)
        boxes = np.concatenate([top_left, top_left + size], axis=-1)
        classes = rng.integers(num_classes, size=per_image)
        yield Detections(boxes, classes, rng.uniform(0, 1, per_image))


def random_detections(
    count: int, per_image: int, train_truths: np.ndarray, num_classes: int, seed: int = 0
) -> list[Detections]:
    """`per_image` random boxes for each of `count` images: training box sizes, uniform places,
    classes and scores."""
    boxes = random_boxes(per_image, box_sizes(train_truths), num_classes, seed)
    return list(itertools.islice(boxes, count))


def training_box_sizes(train: Split, batch_size: int = 1024) -> np.ndarray:
    """box_sizes of the training split (T, 2), read batch by batch; of an evenly strided
    sample of its images when it has more than MAX_SCORED_EXAMPLES."""
    sample, sizes = StridedSample(len(train), MAX_SCORED_EXAMPLES), []
    for y in train.target_batches(batch_size):
        sizes.append(box_sizes(np.asarray(y)[sample.pick(len(y))]))
    return np.concatenate(sizes)


def streamed_detections(
    model: keras.Model, split: Split, batch_size: int = 256
) -> Iterator[tuple[Detections, np.ndarray]]:
    """The detector's valid detections and the padded true boxes (M, 5) of each image of
    `split`, predicted batch by batch."""
    for x, y in split.batches(batch_size):
        outputs = predict_rows(model, x)
        counts = np.asarray(outputs["num_detections"]).astype(int)  # (B,)
        boxes, classes, scores = (np.asarray(outputs[k]) for k in ("boxes", "classes", "scores"))
        for i, n in enumerate(counts):
            yield Detections(boxes[i, :n], classes[i, :n], scores[i, :n]), np.asarray(y[i])


def model_detections(model: keras.Model, prepared: PreparedData, split: str) -> list[Detections]:
    """The detector's valid detections for each image of `split`."""
    return [found for found, _ in streamed_detections(model, prepared.splits[split])]


def evaluate_detector(
    model: keras.Model,
    prepared: PreparedData,
    split: str = "test",
    iou: float = 0.5,
    batch_size: int = 256,
) -> Evaluation:
    """mAP@iou of the detector on `split`, AP per class, and the random-boxes baseline."""
    test, classes = prepared.splits[split], prepared.manifest.classes
    per_image = int(model.get_layer("nms").max_detections)
    sizes = training_box_sizes(prepared.splits["train"])
    guesses = random_boxes(per_image, sizes, len(classes))
    ranked, baseline = RankedDetections(len(classes), iou), RankedDetections(len(classes), iou)
    sample, detected = StridedSample(len(test), MAX_SCORED_EXAMPLES), 0
    for found, truth in streamed_detections(model, test, batch_size):
        guess = next(guesses)  # one guess per image, sampled or not: the same draws
        detected += len(found.scores)
        if sample.pick(1)[0]:
            ranked.add(found, truth)
            baseline.add(guess, truth)
    score, per_class = ranked.mean_average_precision()
    tag = f"{int(round(iou * 100))}"
    metrics = {
        f"test_map{tag}": score,
        f"baseline_random_map{tag}": baseline.mean_average_precision()[0],
        "test_detections_per_image": detected / len(test),
    }
    for name, ap in zip(classes, per_class, strict=True):
        if not np.isnan(ap):
            metrics[f"test_ap{tag}_{name}"] = ap
    return Evaluation(metrics=metrics, classes=tuple(classes))
