"""How the segmenter trains: its `probabilities` output on the masks with per-pixel sparse
cross-entropy. The model keeps its `mask` output, so it is evaluated and served as built."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from kerasops.data import Manifest, PreparedData
from kerasops.models.evaluation import Evaluation
from kerasops.models.inputs import InputSpec
from kerasops.models.plots import confusion_matrix_plot
from kerasops.models.recipe import Recipe
from kerasops.models.segmenter.builder import training_view
from kerasops.models.segmenter.metrics import evaluate_segmenter
from kerasops.models.segmenter.plots import plot_test_masks
from kerasops.models.training import History, RunLog, TrainConfig, fit, make_optimizer


class SegmentationRecipe(Recipe):
    """Fits the segmenter's training view (it shares the segmenter's weights) on the masks."""

    tasks = ("segmentation",)

    def wrong_task(self, manifest: Manifest) -> str:
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; the segmenter needs a "
            "segmentation dataset (e.g. segmentation_digits, or a segmentation_folder source)"
        )

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return model  # the training view is compiled in `fit`

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: Any,
        log: RunLog,
    ) -> History:
        view = training_view(model)
        view.compile(
            optimizer=make_optimizer(train),
            loss="sparse_categorical_crossentropy",  # (B, H, W) ids against (B, H, W, K)
            metrics=["sparse_categorical_accuracy"],
            jit_compile=train.jit_compile,
        )
        return fit(view, prepared, train, callbacks)

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        return evaluate_segmenter(model, prepared, split)

    def write_plots(
        self, model: keras.Model, prepared: PreparedData, evaluation: Evaluation, folder: Path
    ) -> None:
        plot_test_masks(model, prepared, folder / "segmentation.png")
        if evaluation.confusion is not None:  # pixels, rows true, columns predicted
            confusion_matrix_plot(
                evaluation.confusion, evaluation.classes, folder / "confusion_matrix.png"
            )
