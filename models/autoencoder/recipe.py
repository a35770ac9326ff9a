"""How the autoencoder trains: x -> x (pixels / pixel_max) on the normal classes; it is served
as an anomaly scorer.

The class `anomaly_class` is withheld from training and validation; the threshold is a
percentile of the validation split's reconstruction errors; the held-out split's withheld
class is the anomaly set the detection metrics are computed on.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from kerasops.data import PreparedData, Split
from kerasops.models.autoencoder.builder import AutoencoderConfig, build_anomaly_scorer
from kerasops.models.autoencoder.metrics import autoencoder_metrics, without_class
from kerasops.models.evaluation import Evaluation
from kerasops.models.inputs import InputSpec
from kerasops.models.recipe import Recipe
from kerasops.models.training import History, RunLog, TrainConfig, compile_model, fit_on


class AutoencoderRecipe(Recipe):
    """Reconstruction loss on normal images; evaluation by reconstruction and anomaly scores."""

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        spec = super().input_spec(prepared, train)
        return spec.replace(task="reconstruction", num_outputs=int(np.prod(spec.shape)))

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return compile_model(model, "regression", train)  # mse loss, mae metric

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: AutoencoderConfig,
        log: RunLog,
    ) -> History:
        pixel_max = config.inputs.pixel_max

        def clean_targets(split: Split) -> Split:
            normal = without_class(split, config.anomaly_class)
            return Split(normal.x, (normal.x / pixel_max).astype("float32"))

        splits = prepared.splits
        return fit_on(
            model, clean_targets(splits["train"]), clean_targets(splits["val"]), train, callbacks
        )

    def evaluate(
        self,
        model: keras.Model,
        prepared: PreparedData,
        config: AutoencoderConfig,
        split: str = "test",
    ) -> Evaluation:
        """Score the autoencoder, or the one inside a saved anomaly scorer (re-evaluation)."""
        if "is_anomaly" in model.output_names:
            model = next(layer for layer in model.layers if isinstance(layer, keras.Model))
        return Evaluation(metrics=autoencoder_metrics(model, prepared, config, split))

    def serving_model(
        self, model: keras.Model, config: AutoencoderConfig, evaluation: Evaluation
    ) -> keras.Model:
        threshold = evaluation.metrics["anomaly_threshold"]
        return build_anomaly_scorer(model, config.inputs.pixel_max, threshold)

    def example_inputs(self, model: keras.Model, prepared: PreparedData) -> np.ndarray:
        return np.asarray(prepared.splits["test"].head(5).x, dtype="float32")
