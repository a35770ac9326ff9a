"""The segmenter's plot: test images, their true masks and the predicted masks."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend, no state between plots

from kerasops.data import PreparedData
from kerasops.models.evaluation import predict_rows


def plot_test_masks(model: keras.Model, prepared: PreparedData, path: Path, count: int = 6) -> Path:
    """`segmentation.png`: the first `count` test images with their true and predicted masks."""
    first = prepared.splits["test"].head(count)
    images = np.asarray(first.x)
    predicted = np.asarray(predict_rows(model, images)["mask"])
    return masks_plot(images, np.asarray(first.y), predicted, len(prepared.manifest.classes), path)


def masks_plot(
    images: np.ndarray, truths: np.ndarray, predicted: np.ndarray, num_classes: int, path: Path
) -> Path:
    """One column per image (N, H, W, C): the image, its true mask (N, H, W), the prediction."""
    rows = (("image", images), ("true mask", truths), ("predicted mask", predicted))
    fig = Figure(figsize=(1.8 * len(images), 5.6))
    axes = fig.subplots(3, len(images), squeeze=False)
    for r, (title, values) in enumerate(rows):
        for c, value in enumerate(values):
            ax = axes[r][c]
            if r == 0:
                shown = value[..., 0] if value.shape[-1] == 1 else value / max(value.max(), 1)
                ax.imshow(shown, cmap="gray")
            else:
                ax.imshow(value, cmap="tab20", vmin=0, vmax=max(num_classes - 1, 1))
            ax.set_axis_off()
        axes[r][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
