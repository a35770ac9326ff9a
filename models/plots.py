"""Plots written next to a run: learning curves, confusion matrix, forecast against truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend, no state between plots


def learning_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """One panel per metric, training and validation curves together."""
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig = Figure(figsize=(5 * len(names), 3.5))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        epochs = range(1, len(history[name]) + 1)  # as Keras prints them: Epoch 1/N
        ax.plot(epochs, history[name], label=f"train {name}")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def confusion_matrix_plot(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path):
    """Counts per (true, predicted) class, annotated."""
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
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
    return path


def forecast_plot(y_true: np.ndarray, forecast: np.ndarray, naive: np.ndarray, path: Path):
    """The first forecast step over the test split, with the naive last-value forecast."""
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    ax.plot(y_true[:, 0], label="actual", color="black")
    ax.plot(forecast[:, 0], label="model")
    ax.plot(naive[:, 0], label="naive last value", linestyle="--")
    ax.set_xlabel("test window")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
