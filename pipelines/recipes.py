"""Training recipes: how a family's model is compiled, fitted and evaluated.

Most families use the `standard` recipe (one compile, one fit with early stopping, task metrics).
A family that trains differently (two-phase fine-tuning, a GAN's adversarial steps, a detector's
loss) registers a subclass here under the name its `ModelFamily.recipe` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from data import PreparedData
from models import InputSpec
from models.config import ConfigError
from pipelines.evaluate import Evaluation, evaluate_model
from pipelines.settings import TrainConfig


class Recipe:
    """The standard recipe; subclasses override the steps that differ."""

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        from pipelines.train import input_spec

        return input_spec(prepared, train)

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        from pipelines.train import compile_model

        return compile_model(model, spec.task, train)

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        model_config: Any = None,
    ) -> dict[str, list[float]]:
        """Fit and return the per-epoch history (what the learning curves and history.csv show)."""
        from pipelines.train import fit

        return fit(model, prepared, train, callbacks)

    def evaluate(self, model: keras.Model, prepared: PreparedData) -> Evaluation:
        return evaluate_model(model, prepared)

    def serving_model(self, model: keras.Model) -> keras.Model:
        """The model that is saved, logged and exported (a GAN returns its generator)."""
        return model


RECIPES: dict[str, Recipe] = {"standard": Recipe()}


def get_recipe(name: str) -> Recipe:
    """Return the recipe registered as `name`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown training recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
