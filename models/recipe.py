"""The standard training recipe: how a family's model is compiled, fitted, scored and served.

Most families (mlp, cnn, rnn, transformer, vit) train with `Recipe` itself: one compile with the
task's loss, one fit with early stopping, the task's held-out metrics. A family that trains
differently (two-phase fine-tuning, adversarial steps, a detector's loss, token-level sequence
loss) subclasses it in its own module and names the instance in its `ModelFamily`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasops.data import Manifest, PreparedData, make_tf_dataset
from kerasops.models.evaluation import TASK_SCORES, Evaluation, evaluate_task, predict
from kerasops.models.inputs import InputSpec
from kerasops.models.plots import confusion_matrix_plot, forecast_plot
from kerasops.models.training import History, RunLog, TrainConfig, compile_model, fit


class Recipe:
    """The standard recipe; subclasses override the steps that differ.

    Each method takes the family's typed config (`config`), as resolved for the run, where the
    step depends on it.
    """

    tasks: tuple[str, ...] = tuple(TASK_SCORES)  # the dataset tasks it trains on

    def wrong_task(self, manifest: Manifest) -> str:
        """What to tell a user who gave a dataset of another task (the registry checks)."""
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; this model trains on "
            f"{' or '.join(self.tasks)} data"
        )

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        """The model's InputSpec (shapes, statistics, vocabulary) from the training split."""
        return data_input_spec(prepared, train)

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return compile_model(model, spec.task, train)

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: Any,
        log: RunLog,
    ) -> History:
        """Fit and return the per-epoch history (what the learning curves and history.csv show)."""
        return fit(model, prepared, train, callbacks)

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        """Held-out metrics of `model` (as trained, or as served) on one split."""
        return evaluate_task(model, prepared, split)

    def serving_model(self, model: keras.Model, config: Any, evaluation: Evaluation) -> keras.Model:
        """The model that is saved, logged and exported (an autoencoder returns its anomaly
        scorer, which needs the threshold its evaluation chose)."""
        return model

    def example_inputs(self, model: keras.Model, prepared: PreparedData) -> np.ndarray:
        """A few inputs of the served model, for its logged signature."""
        return np.asarray(prepared.splits["test"].head(5).x)

    def write_plots(
        self, model: keras.Model, prepared: PreparedData, evaluation: Evaluation, folder: Path
    ) -> None:
        """The family's own plots beside the learning curves: a classifier's confusion matrix,
        a forecaster's forecast against the truth."""
        if evaluation.confusion is not None:
            confusion_matrix_plot(
                evaluation.confusion, evaluation.classes, folder / "confusion_matrix.png"
            )
        if prepared.manifest.task == "regression":
            test = prepared.splits["test"]
            forecast = predict(model, test)
            naive = np.repeat(np.asarray(test.x)[:, -1, :1], forecast.shape[-1], axis=1)
            forecast_plot(np.asarray(test.y), forecast, naive, folder / "forecast.png")


def data_input_spec(prepared: PreparedData, train: TrainConfig) -> InputSpec:
    """The InputSpec of a prepared dataset: its kind's statistics (SPEC_VALUES) added to the
    shapes and output width every kind has."""
    manifest = prepared.manifest
    labelled = manifest.task in ("classification", "detection", "segmentation")
    values: dict[str, Any] = {
        "kind": manifest.kind,
        "task": manifest.task,
        "shape": list(manifest.input_shape),
        "num_outputs": len(manifest.classes) if labelled else int(np.prod(manifest.target_shape)),
        **SPEC_VALUES[manifest.kind](prepared, train),
    }
    return InputSpec.from_dict(values, prefix="inputs.")


def _pixel_values(prepared: PreparedData, train: TrainConfig) -> dict[str, Any]:
    return {"pixel_max": float(prepared.manifest.stats.get("pixel_max", 255.0))}


def _feature_statistics(prepared: PreparedData, train: TrainConfig) -> dict[str, Any]:
    """Per-feature mean and variance of the training split, merged batch by batch (Chan et al.)."""
    count, mean, m2 = 0, 0.0, 0.0
    for x, _ in prepared.splits["train"].batches():
        flat = np.asarray(x, dtype="float64").reshape(-1, x.shape[-1])  # (B*T, F)
        n, batch_mean = len(flat), flat.mean(axis=0)
        delta = batch_mean - mean
        mean = mean + delta * n / (count + n)
        m2 = m2 + ((flat - batch_mean) ** 2).sum(axis=0) + delta**2 * count * n / (count + n)
        count += n
    return {
        "mean": np.asarray(mean).tolist(),
        "variance": np.maximum(np.asarray(m2) / count, 1e-12).tolist(),
    }


def _text_vocabulary(prepared: PreparedData, train: TrainConfig) -> dict[str, Any]:
    """The vocabulary adapted on the streamed training texts."""
    vectorizer = keras.layers.TextVectorization(max_tokens=train.max_tokens)
    texts = make_tf_dataset(prepared.splits["train"], 1024, False, cache="none")
    vectorizer.adapt(texts.map(lambda x, y: x))
    return {
        "vocabulary": vectorizer.get_vocabulary()[2:],  # drop padding and [UNK]
        "sequence_length": train.sequence_length,
    }


def _audio_values(prepared: PreparedData, train: TrainConfig) -> dict[str, Any]:
    return {"sample_rate": int(prepared.manifest.stats.get("sample_rate", 16000))}


# What each data kind adds to the InputSpec, from the training split.
SPEC_VALUES = {
    "image": _pixel_values,
    "tabular": _feature_statistics,
    "timeseries": _feature_statistics,
    "text": _text_vocabulary,
    "audio": _audio_values,
}
