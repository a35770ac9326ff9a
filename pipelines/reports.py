"""Plots written next to a run: learning curves, confusion matrix, forecast against truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """One panel per metric, training and validation curves together."""
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(history[name], label=f"train {name}")
        if f"val_{name}" in history:
            ax.plot(history[f"val_{name}"], label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix_plot(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path):
    """Counts per (true, predicted) class, annotated."""
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        color = "white" if value > threshold else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forecast_plot(y_true: np.ndarray, forecast: np.ndarray, naive: np.ndarray, path: Path):
    """The first forecast step over the test split, with the naive last-value forecast."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(y_true[:, 0], label="actual", color="black")
    ax.plot(forecast[:, 0], label="model")
    ax.plot(naive[:, 0], label="naive last value", linestyle="--")
    ax.set_xlabel("test window")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def detections_plot(
    images: np.ndarray,
    truths: np.ndarray,
    found: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    path: Path,
):
    """Test images (N, H, W, C) with their true boxes (green) and detections (red, class:score);
    truths (N, M, 5) and found boxes are [ymin, xmin, ymax, xmax] image fractions."""
    fig, axes = plt.subplots(1, len(images), figsize=(2.4 * len(images), 2.6), squeeze=False)
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
    plt.close(fig)
    return path


def _box(ax, box: np.ndarray, height: int, width: int, color: str, text: str | None) -> None:  # noqa: ANN001
    top, left = box[0] * height, box[1] * width
    rectangle = plt.Rectangle(
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
