"""How the keyword spotter trains: the standard classifier recipe (one compile, one fit with
early stopping), scored on the test split and on the held-out voice."""

from __future__ import annotations

from typing import Any

import keras

from kerasops.data import Manifest, PreparedData
from kerasops.models.evaluation import Evaluation
from kerasops.models.keyword_spotter.metrics import evaluate_keyword_spotter
from kerasops.models.recipe import Recipe


class KeywordSpottingRecipe(Recipe):
    """The standard recipe with the unseen-voice figures beside the test split's."""

    tasks = ("classification",)

    def wrong_task(self, manifest: Manifest) -> str:
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; the keyword spotter needs "
            "an audio classification dataset (e.g. speech_commands, or an audio_folder source)"
        )

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        return evaluate_keyword_spotter(model, prepared, split)
