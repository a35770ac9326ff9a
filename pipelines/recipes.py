"""Training recipes: how a family's model is compiled, fitted and evaluated.

Most families use the `standard` recipe (one compile, one fit with early stopping, task metrics).
A family that trains differently (two-phase fine-tuning, a GAN's adversarial steps, a detector's
loss) registers a subclass here under the name its `ModelFamily.recipe` gives.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import keras
import mlflow
import numpy as np

from data import PreparedData, Split, make_tf_dataset
from models import InputSpec
from models.autoencoder import AutoencoderConfig, build_anomaly_scorer
from models.config import ConfigError
from models.gan import AdversarialTrainer, GanConfig, build_discriminator
from pipelines import generative, sequence
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

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, model_config: Any = None
    ) -> Evaluation:
        return evaluate_model(model, prepared)

    def serving_model(
        self, model: keras.Model, model_config: Any = None, evaluation: Evaluation | None = None
    ) -> keras.Model:
        """The model that is saved, logged and exported (an autoencoder returns its anomaly
        scorer, which needs the threshold its evaluation chose)."""
        return model

    def example_inputs(self, model: keras.Model, prepared: PreparedData) -> np.ndarray:
        """A few inputs of the served model, for its logged signature."""
        return np.asarray(prepared.splits["test"].x[:5])


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

    def evaluate(self, model, prepared, model_config=None) -> Evaluation:
        from pipelines.detection import evaluate_detector

        return evaluate_detector(model, prepared)


class SequenceRecipe(Recipe):
    """Token-level cross-entropy over character sequences (language models, translators)."""

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return sequence.compile_sequence_model(model, train)

    def fit(self, model, prepared, train, callbacks, model_config=None):
        return sequence.fit_sequence_model(model, prepared, train, callbacks)


class LanguageModelRecipe(SequenceRecipe):
    """Character language model: next-character cross-entropy, perplexity against a unigram
    model; the saved, logged and exported model generates text (prompt in, continuation out)."""

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        return sequence.language_model_spec(prepared, train)

    def evaluate(self, model, prepared, model_config=None) -> Evaluation:
        return sequence.evaluate_language_model(model, prepared)

    def serving_model(self, model, model_config=None, evaluation=None) -> keras.Model:
        from models.language_model import LanguageModelConfig, build_text_generator

        length = (model_config or LanguageModelConfig).max_new_tokens  # a model setting
        return build_text_generator(model, length)


class TranslationRecipe(SequenceRecipe):
    """Encoder-decoder translator: teacher-forced cross-entropy; exact match and character
    BLEU of greedy decoding against copying the source; serves source in, translation out."""

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        return sequence.translation_spec(prepared, train)

    def evaluate(self, model, prepared, model_config=None) -> Evaluation:
        return sequence.evaluate_translator(model, prepared)

    def serving_model(self, model, model_config=None, evaluation=None) -> keras.Model:
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


def fit_on(
    model: keras.Model,
    train_split: Split,
    val_split: Split | None,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """Fit on explicit (x, y) splits; return the per-epoch history."""
    if train.epochs == 0:
        return {}
    data = make_tf_dataset(train_split, train.batch_size, True, train.seed)
    val = make_tf_dataset(val_split, train.batch_size, False) if val_split else None
    history = model.fit(
        data, validation_data=val, epochs=train.epochs, callbacks=list(callbacks), verbose=2
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


class AutoencoderRecipe(Recipe):
    """x -> x (pixels / pixel_max) on the normal classes; serves an anomaly scorer.

    The class `anomaly_class` is withheld from training and validation; the threshold is a
    percentile of the validation split's reconstruction errors; the test split's withheld
    class is the anomaly set the detection metrics are computed on.
    """

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        spec = super().input_spec(prepared, train)
        return spec.replace(task="reconstruction", num_outputs=int(np.prod(spec.shape)))

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        from pipelines.train import compile_model

        return compile_model(model, "regression", train)  # mse loss, mae metric

    def fit(self, model, prepared, train, callbacks, model_config=None):
        config: AutoencoderConfig = model_config
        pixel_max = config.inputs.pixel_max

        def clean_targets(split: Split) -> Split:
            normal = generative.without_class(split, config.anomaly_class)
            return Split(normal.x, (normal.x / pixel_max).astype("float32"))

        splits = prepared.splits
        return fit_on(
            model, clean_targets(splits["train"]), clean_targets(splits["val"]), train, callbacks
        )

    def evaluate(self, model, prepared, model_config=None) -> Evaluation:
        """Score the autoencoder, or the one inside a saved anomaly scorer (re-evaluation)."""
        config: AutoencoderConfig = model_config
        if "is_anomaly" in model.output_names:
            model = next(layer for layer in model.layers if isinstance(layer, keras.Model))
        return Evaluation(metrics=autoencoder_metrics(model, prepared, config))

    def serving_model(self, model, model_config=None, evaluation=None) -> keras.Model:
        threshold = evaluation.metrics["anomaly_threshold"]
        return build_anomaly_scorer(model, model_config.inputs.pixel_max, threshold)

    def example_inputs(self, model, prepared) -> np.ndarray:
        return np.asarray(prepared.splits["test"].x[:5], dtype="float32")


def autoencoder_metrics(
    model: keras.Model, prepared: PreparedData, config: AutoencoderConfig
) -> dict[str, float]:
    """Reconstruction (and denoising) MSE vs baselines; threshold; anomaly detection quality."""
    pixel_max = config.inputs.pixel_max
    label = config.anomaly_class
    train_x = generative.without_class(prepared.splits["train"], label).x
    val_x = generative.without_class(prepared.splits["val"], label).x
    test = prepared.splits["test"]
    is_anomaly = np.asarray(test.y).reshape(-1) == label
    normal_x, anomaly_x = np.asarray(test.x)[~is_anomaly], np.asarray(test.x)[is_anomaly]

    errors = generative.reconstruction_errors(model, normal_x, pixel_max)
    threshold = float(
        np.percentile(
            generative.reconstruction_errors(model, val_x, pixel_max), config.threshold_percentile
        )
    )
    metrics = {
        "test_reconstruction_mse": float(errors.mean()),
        "baseline_mean_image_mse": float(
            generative.mean_image_errors(train_x, normal_x, pixel_max).mean()
        ),
        "anomaly_threshold": threshold,
    }
    if config.mode == "denoise":
        noisy = generative.add_noise(normal_x, config.noise_stddev, pixel_max, seed=0)
        denoised = np.asarray(model.predict(noisy, batch_size=256, verbose=0))
        metrics["test_denoising_mse"] = float(np.mean((denoised - normal_x / pixel_max) ** 2))
        metrics["baseline_noisy_input_mse"] = float(np.mean(((noisy - normal_x) / pixel_max) ** 2))
    if len(anomaly_x):
        anomaly_errors = generative.reconstruction_errors(model, anomaly_x, pixel_max)
        metrics |= generative.anomaly_metrics(errors, anomaly_errors, threshold, "anomaly_")
        mean_normal = generative.mean_image_errors(train_x, normal_x, pixel_max)
        mean_anomaly = generative.mean_image_errors(train_x, anomaly_x, pixel_max)
        metrics["baseline_mean_image_roc_auc"] = generative.anomaly_metrics(
            mean_normal, mean_anomaly, 0.0, ""
        )["roc_auc"]
    return metrics


class GanRecipe(Recipe):
    """Adversarial training of the generator against a discriminator; the generator is served.

    The GAN has no validation loss, so early stopping and best-checkpointing are not used: the
    generator after the last epoch is kept. A grid of samples goes to MLflow every epoch.
    """

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        spec = super().input_spec(prepared, train)
        return spec.replace(task="generation", num_outputs=int(np.prod(spec.shape)))

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return model  # the adversarial trainer is compiled in `fit`, with the discriminator

    def fit(self, model, prepared, train, callbacks, model_config=None):
        config: GanConfig = model_config
        trainer = AdversarialTrainer(
            model,
            build_discriminator(config),
            config.latent_dim,
            label_smoothing=config.label_smoothing,
            seed=train.seed,
        )
        trainer.compile(  # beta_1 = 0.5: the DCGAN paper's setting for stable adversarial steps
            d_optimizer=keras.optimizers.Adam(train.learning_rate, beta_1=0.5),
            g_optimizer=keras.optimizers.Adam(train.learning_rate, beta_1=0.5),
        )
        kept = [
            c
            for c in callbacks
            if not isinstance(c, keras.callbacks.EarlyStopping | keras.callbacks.ModelCheckpoint)
        ]
        grid = generative.SampleGridLogger(model, config.inputs.pixel_max, seed=train.seed)
        return fit_on(trainer, prepared.splits["train"], None, train, [*kept, grid])

    def evaluate(self, model, prepared, model_config=None) -> Evaluation:
        splits = prepared.splits
        return Evaluation(
            metrics=generative.gan_metrics(
                model, splits["train"], splits["test"], model_config.inputs.pixel_max
            )
        )

    def example_inputs(self, model, prepared) -> np.ndarray:
        return np.random.default_rng(0).normal(size=(5, model.input_shape[-1])).astype("float32")


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(),
    "transfer": TransferRecipe(),
    "language_model": LanguageModelRecipe(),
    "translation": TranslationRecipe(),
    "autoencoder": AutoencoderRecipe(),
    "gan": GanRecipe(),
    "detection": DetectionRecipe(),
}


def get_recipe(name: str) -> Recipe:
    """Return the recipe registered as `name`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown training recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
