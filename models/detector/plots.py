"""`detections.png`: test images with their true boxes and the detector's detections."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kerasops.data import PreparedData
from kerasops.models.detector.metrics import model_detections


def plot_test_detections(
    model: keras.Model, prepared: PreparedData, path: Path, count: int = 8, min_score: float = 0.25
) -> Path:
    """`detections.png`: the first `count` test images with their true boxes and the
    detections scoring at least `min_score`."""
    test = prepared.splits["test"]
    first = test.head(count)
    sample = dataclasses.replace(prepared, splits={**prepared.splits, "test": first})
    found = []
    for d in model_detections(model, sample, "test"):
        keep = d.scores >= min_score
        found.append((d.boxes[keep], d.classes[keep], d.scores[keep]))
    return detections_plot(first.x, first.y, found, prepared.manifest.classes, path)


def detections_plot(
    images: np.ndarray,
    truths: np.ndarray,
    found: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    path: Path,
):
    """Test images (N, H, W, C) with their true boxes (green) and detections (red, class:score);
    truths (N, M, 5) and found boxes are [ymin, xmin, ymax, xmax] image fractions."""
    fig = Figure(figsize=(2.4 * len(images), 2.6))
    axes = fig.subplots(1, len(images), squeeze=False)
    panels = zip(axes[0], images, truths, found, strict=True)
    for ax, image, truth, (boxes, labels, scores) in panels:
        height, width = image.shape[:2]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image / image.max(), cmap="gray")
        for row in truth[truth[:, 4] >= 0]:
            _box(ax, row[:4], height, width, "lime", None)
        for box, label, score in zip(boxes, labels, scores, strict=True):
            _box(ax, box, height, width, "red", f"{classes[int(label)]}:{score:.2f}")
        ax.set_axis_off()
    fig.suptitle("true boxes (green), detections (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _box(ax, box: np.ndarray, height: int, width: int, color: str, text: str | None) -> None:  # noqa: ANN001
    top, left = box[0] * height, box[1] * width
    rectangle = Rectangle(
        (left - 0.5, top - 0.5),
        (box[3] - box[1]) * width,
        (box[2] - box[0]) * height,
        fill=False,
        edgecolor=color,
        linewidth=1.2,
    )
    ax.add_patch(rectangle)
    if text:
        ax.text(left, top - 1, text, color=color, fontsize=6, va="bottom")
