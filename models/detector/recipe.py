"""How the detector trains: through its `grid` output on encoded grid targets. The model keeps
its decoding and non-max suppression, so it is evaluated (mAP) and served as built."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasops.data import Manifest, PreparedData, Split
from kerasops.models.detector.builder import (
    DetectionLoss,
    encode_targets,
    grid_shape,
    training_view,
)
from kerasops.models.detector.metrics import evaluate_detector
from kerasops.models.detector.plots import plot_test_detections
from kerasops.models.evaluation import Evaluation
from kerasops.models.inputs import InputSpec
from kerasops.models.recipe import Recipe
from kerasops.models.training import History, RunLog, TrainConfig, fit, make_optimizer


class DetectionRecipe(Recipe):
    """Fits the detector's training view (it shares the detector's weights) on grid targets."""

    tasks = ("detection",)

    def wrong_task(self, manifest: Manifest) -> str:
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; the detector needs a "
            "detection dataset (e.g. detection_digits, or a detection_csv source)"
        )

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return model  # the training view is compiled in `fit`; the detector is not trained

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
        view.compile(optimizer=make_optimizer(train), loss=DetectionLoss())
        grid = grid_shape(model)
        splits = {
            name: Split(split.x, encode_targets(np.asarray(split.y), grid))  # (N, Sy, Sx, 6)
            for name, split in prepared.splits.items()
        }
        return fit(view, dataclasses.replace(prepared, splits=splits), train, callbacks)

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        return evaluate_detector(model, prepared, split)

    def write_plots(
        self, model: keras.Model, prepared: PreparedData, evaluation: Evaluation, folder: Path
    ) -> None:
        plot_test_detections(model, prepared, folder / "detections.png")
