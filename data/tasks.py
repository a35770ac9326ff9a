"""What each dataset task's targets hold, where preparation and validation need to know.

Classification targets are one class index per example; detection targets are padded box rows
`[ymin, xmin, ymax, xmax, class]` (class -1 pads), so their class indices are one per box;
segmentation targets are masks of class ids, one per pixel.
The other tasks (regression, language modeling, translation) have no classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _example_classes(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(-1)


def _box_classes(y: np.ndarray) -> np.ndarray:
    classes = np.asarray(y)[..., 4].reshape(-1)
    return classes[classes >= 0].astype(np.int64)  # padding rows left out


def _pixel_classes(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(np.int64)  # one class id per mask pixel


# The tasks whose targets hold classes, and how to read the class indices from them.
CLASS_LABELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "classification": _example_classes,
    "detection": _box_classes,
    "segmentation": _pixel_classes,
}


def is_labelled(task: str) -> bool:
    """Whether the task's targets hold class indices."""
    return task in CLASS_LABELS


def class_labels(y: np.ndarray, task: str) -> np.ndarray:
    """The class indices of a split's targets: one per example, or one per box."""
    return CLASS_LABELS[task](y)


def box_rows(y: np.ndarray) -> np.ndarray:
    """The real boxes of detection targets (padding left out): (boxes, 5)."""
    rows = np.asarray(y).reshape(-1, 5)
    return rows[rows[:, 4] >= 0]


def _box_samples(y: np.ndarray) -> dict[str, np.ndarray]:
    boxes = box_rows(y)  # (boxes, 5)
    return {
        "labels": boxes[:, 4].astype(float),
        "box heights": (boxes[:, 2] - boxes[:, 0]).astype(float),
    }


# The 1-D samples of each task's targets that drift is measured on (others: the targets).
TARGET_SAMPLES: dict[str, Callable[[np.ndarray], dict[str, np.ndarray]]] = {
    "classification": lambda y: {"labels": _example_classes(y).astype(float)},
    "detection": _box_samples,
    "segmentation": lambda y: {"pixel labels": _pixel_classes(y).astype(float)},
}


def target_samples(y: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Named 1-D samples of a split's targets, for distribution checks."""
    if task in TARGET_SAMPLES:
        return TARGET_SAMPLES[task](y)
    return {"targets": np.asarray(y).reshape(-1).astype(float)}
