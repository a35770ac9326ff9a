"""Training recipes: how a family's model is compiled, fitted and evaluated.

Most families use the `standard` recipe (one compile, one fit with early stopping, task metrics).
A family that trains differently (two-phase fine-tuning, a GAN's adversarial steps, a detector's
loss) registers a subclass here under the name its `ModelFamily.recipe` gives.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from data import PreparedData, Split
from models import InputSpec
from models.config import ConfigError
from pipelines import sequence
from pipelines.evaluate import Evaluation, evaluate_model
from pipelines.settings import TrainConfig


class Recipe:
    """The standard recipe; subclasses override the steps that differ."""

    tasks: tuple[str, ...] = ("classification", "regression")  # the dataset tasks it trains on

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        from pipelines.train import input_spec

        manifest = prepared.manifest
        if manifest.task not in self.tasks:
            raise ConfigError(
                f"dataset {manifest.name!r} is a {manifest.task} dataset; this model trains on "
                f"{' or '.join(self.tasks)} data"
                + (" (train the detector on it)" if manifest.task == "detection" else "")
            )
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


class DetectionRecipe(Recipe):
    """Trains a detector through its `grid` output on encoded grid targets; the model keeps its
    decoding and non-max suppression, so it is evaluated (mAP) and served as built."""

    tasks = ("detection",)

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return model  # the training view is compiled in `fit`; the detector is not trained

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        model_config: Any = None,
    ) -> dict[str, list[float]]:
        from models.detection import DetectionLoss, encode_targets, grid_shape, training_view
        from pipelines.train import fit, make_optimizer

        view = training_view(model)  # shares the detector's weights
        view.compile(optimizer=make_optimizer(train), loss=DetectionLoss())
        grid = grid_shape(model)
        splits = {
            name: Split(split.x, encode_targets(np.asarray(split.y), grid))  # (N, Sy, Sx, 6)
            for name, split in prepared.splits.items()
        }
        return fit(view, dataclasses.replace(prepared, splits=splits), train, callbacks)

    def evaluate(self, model: keras.Model, prepared: PreparedData) -> Evaluation:
        from pipelines.detection import evaluate_detector

        return evaluate_detector(model, prepared)


class LanguageModelRecipe(Recipe):
    """Character language model: next-character cross-entropy, perplexity against a unigram
    model; the saved, logged and exported model generates text (prompt in, continuation out)."""

    def __init__(self) -> None:
        self._max_new_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        return sequence.language_model_spec(prepared, train)

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return sequence.compile_sequence_model(model, train)

    def fit(self, model, prepared, train, callbacks, model_config=None):
        if model_config is not None:  # the generation length is a model setting
            self._max_new_tokens[model] = model_config.max_new_tokens
        return sequence.fit_sequence_model(model, prepared, train, callbacks)

    def evaluate(self, model: keras.Model, prepared: PreparedData) -> Evaluation:
        return sequence.evaluate_language_model(model, prepared)

    def serving_model(self, model: keras.Model) -> keras.Model:
        from models.language_model import LanguageModelConfig, build_text_generator

        default = LanguageModelConfig.max_new_tokens
        return build_text_generator(model, self._max_new_tokens.get(model, default))


class TranslationRecipe(Recipe):
    """Encoder-decoder translator: teacher-forced cross-entropy; exact match and character
    BLEU of greedy decoding against copying the source; serves source in, translation out."""

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        return sequence.translation_spec(prepared, train)

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return sequence.compile_sequence_model(model, train)

    def fit(self, model, prepared, train, callbacks, model_config=None):
        return sequence.fit_sequence_model(model, prepared, train, callbacks)

    def evaluate(self, model: keras.Model, prepared: PreparedData) -> Evaluation:
        return sequence.evaluate_translator(model, prepared)

    def serving_model(self, model: keras.Model) -> keras.Model:
        from models.translation import build_greedy_translator

        return build_greedy_translator(model)


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(),
    "language_model": LanguageModelRecipe(),
    "translation": TranslationRecipe(),
    "detection": DetectionRecipe(),
}


def get_recipe(name: str) -> Recipe:
    """Return the recipe registered as `name`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown training recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
