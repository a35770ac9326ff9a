"""Training recipes: how a family's model is compiled, fitted and evaluated.

Most families use the `standard` recipe (one compile, one fit with early stopping, task metrics).
A family that trains differently (two-phase fine-tuning, a GAN's adversarial steps, a detector's
loss) registers a subclass here under the name its `ModelFamily.recipe` gives.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from typing import Any

import keras
import mlflow

from data import PreparedData
from models import InputSpec
from models.config import ConfigError
from pipelines import sequence
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


class TransferRecipe(Recipe):
    """Two phases in one run: the head on the frozen backbone, then fine-tuning its top layers.

    Phase 1 fits `train.epochs` at `train.learning_rate`; phase 2 unfreezes the last
    `fine_tune_layers` backbone layers (BatchNorm stays frozen), recompiles at
    `fine_tune_learning_rate` and fits `fine_tune_epochs`. Each phase has its own early stopping
    and logs `phase<N>_<metric>` per epoch, `phase<N>_trainable_params`, `phase<N>_seconds`,
    `phase<N>_epochs` and `phase<N>_test_*`; the unprefixed per-epoch metrics run on across both.
    """

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        model_config: Any = None,
    ) -> dict[str, list[float]]:
        if model_config.weights == "none" and model_config.calibration_images:
            from models.transfer import calibrate_batchnorm

            images = prepared.splits["train"].x[: model_config.calibration_images]
            mlflow.log_param("calibrated_batchnorm_layers", calibrate_batchnorm(model, images))
        history = self.run_phase(1, model, prepared, train, callbacks, train.epochs, 0)
        if model_config.fine_tune_epochs and model_config.fine_tune_layers:
            start_fine_tuning(model, model_config, prepared, train)
            offset = len(history.get("loss", []))
            second = self.run_phase(
                2, model, prepared, train, callbacks, model_config.fine_tune_epochs, offset
            )
            history = {k: history.get(k, []) + second.get(k, []) for k in {*history, *second}}
        return history

    def run_phase(
        self,
        phase: int,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        epochs: int,
        step_offset: int,
    ) -> dict[str, list[float]]:
        """Fit one phase and log its trainable count, wall time, epochs and test metrics."""
        from pipelines.tracking import MlflowMetrics
        from pipelines.train import fit, trainable_count

        prefix = f"phase{phase}_"
        for callback in callbacks:
            if isinstance(callback, MlflowMetrics) and not callback.prefix:
                callback.step_offset = step_offset  # one continuous curve over both phases
        trainable = trainable_count(model)
        mlflow.log_param(f"{prefix}trainable_params", trainable)
        started = time.monotonic()
        phase_metrics = MlflowMetrics(prefix, step_offset)  # steps count epochs of the run
        history = fit(model, prepared, train, [*callbacks, phase_metrics], epochs=epochs)
        seconds = time.monotonic() - started
        scores = self.evaluate(model, prepared).metrics
        mlflow.log_metrics(
            {
                f"{prefix}trainable_params": float(trainable),
                f"{prefix}seconds": seconds,
                f"{prefix}epochs": float(len(history.get("loss", []))),
                **{f"{prefix}{k}": v for k, v in scores.items() if k.startswith("test_")},
            }
        )
        return history


def start_fine_tuning(
    model: keras.Model, config: Any, prepared: PreparedData, train: TrainConfig
) -> list[str]:
    """Unfreeze the backbone's top layers (BatchNorm kept frozen) and recompile at the
    fine-tuning learning rate; return the names of the layers made trainable."""
    from models.transfer import unfreeze_top_layers
    from pipelines.train import compile_model

    unfrozen = unfreeze_top_layers(model, config.fine_tune_layers)
    slower = train.replace(learning_rate=config.fine_tune_learning_rate)
    compile_model(model, prepared.manifest.task, slower)
    return unfrozen


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(),
    "language_model": LanguageModelRecipe(),
    "translation": TranslationRecipe(),
    "transfer": TransferRecipe(),
}


def get_recipe(name: str) -> Recipe:
    """Return the recipe registered as `name`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown training recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
