"""The train step: build, compile and fit one model on one prepared dataset, tracked in MLflow.

`train_model` is the one definition of training: the CLI, the DVC stages and the Prefect tasks
all call it. It writes `artifacts/runs/<model>-<dataset>/` (model.keras, config.json,
metrics.json, history.csv, plots) atomically, so a failed run leaves the last good outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import tensorflow as tf
from mlflow.models import infer_signature

from data import PreparedData, load_prepared, make_tf_dataset, prepare_dataset
from data.catalog import resolve_dataset_config
from data.errors import DataError
from models import InputSpec, get_family
from pipelines import distribute, reports, tracking
from pipelines.evaluate import Evaluation, predict
from pipelines.lineage import lineage_tags
from pipelines.recipes import get_recipe
from pipelines.settings import Params, RunConfig, TrainConfig, resolve_run_config


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished training run produced."""

    run_id: str  # "" on a non-chief multi-worker process, which records nothing
    run_dir: Path
    config: RunConfig
    metrics: dict[str, float]
    chief: bool = True


def run_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}"


def ensure_prepared(dataset: str, params: Params) -> PreparedData:
    """Load the prepared dataset, (re)preparing it when missing or its config changed."""
    config = resolve_dataset_config(dataset, params.datasets)
    prepared_root = params.path("prepared_data")
    try:
        prepared = load_prepared(dataset, prepared_root)
    except DataError:
        if (prepared_root / dataset / "manifest.json").exists():
            raise  # prepared files exist but fail their hash check: never paper over it
        prepared = None
    if prepared is None or prepared.manifest.config != config.to_dict():
        prepare_dataset(dataset, config, params.path("raw_data"), prepared_root)
        prepared = load_prepared(dataset, prepared_root)
    return prepared


def input_spec(prepared: PreparedData, train: TrainConfig) -> InputSpec:
    """Derive the model's InputSpec (shapes, statistics, vocabulary) from the training split."""
    manifest = prepared.manifest
    x = prepared.splits["train"].x
    values: dict[str, Any] = {
        "kind": manifest.kind,
        "task": manifest.task,
        "shape": list(manifest.input_shape),
        "num_outputs": len(manifest.classes)
        if manifest.task in ("classification", "detection")
        else int(np.prod(manifest.target_shape)),
    }
    if manifest.kind == "image":
        values["pixel_max"] = float(manifest.stats.get("pixel_max", 255.0))
    elif manifest.kind in ("tabular", "timeseries"):
        flat = np.asarray(x, dtype="float64").reshape(-1, x.shape[-1])  # (N*T, F)
        values["mean"] = flat.mean(axis=0).tolist()
        values["variance"] = np.maximum(flat.var(axis=0), 1e-12).tolist()
    else:
        vectorizer = keras.layers.TextVectorization(max_tokens=train.max_tokens)
        vectorizer.adapt(tf.constant(np.asarray(x, dtype=object)))
        values["vocabulary"] = vectorizer.get_vocabulary()[2:]  # drop padding and [UNK]
        values["sequence_length"] = train.sequence_length
    return InputSpec.from_dict(values, prefix="inputs.")


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """A fresh optimizer as `train` names it."""
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(train.learning_rate),
        "adamw": lambda: keras.optimizers.AdamW(train.learning_rate),
        "sgd": lambda: keras.optimizers.SGD(train.learning_rate, momentum=0.9),
    }
    return optimizers[train.optimizer]()


def compile_model(model: keras.Model, task: str, train: TrainConfig) -> keras.Model:
    """Compile with the task's loss and metrics."""
    if task == "classification":
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        loss, metrics = "mse", ["mae"]
    model.compile(
        optimizer=make_optimizer(train),
        loss=loss,
        metrics=metrics,
        jit_compile=train.jit_compile,
    )
    return model


def fit(
    model: keras.Model,
    prepared: PreparedData,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    epochs: int | None = None,
) -> dict[str, list[float]]:
    """Fit on train with validation on val; return the history."""
    epochs = train.epochs if epochs is None else epochs
    if epochs == 0:
        return {}
    train_data = make_tf_dataset(prepared.splits["train"], train.batch_size, True, train.seed)
    val_data = make_tf_dataset(prepared.splits["val"], train.batch_size, False)
    history = model.fit(
        train_data, validation_data=val_data, epochs=epochs, callbacks=list(callbacks), verbose=2
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def standard_callbacks(train: TrainConfig, checkpoint: Path) -> list[keras.callbacks.Callback]:
    """Early stopping (restoring the best weights) and a best-only checkpoint."""
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=train.patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
    ]


def write_outputs(
    stage: Path,
    model: keras.Model,
    config: dict[str, Any],
    evaluation: Evaluation,
    history: Mapping[str, list[float]],
    prepared: PreparedData,
) -> None:
    """Model, config, metrics, history and plots of one run, into the staging folder."""
    model.save(stage / "model.keras")
    (stage / "config.json").write_text(json.dumps(config, indent=2))
    (stage / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
    (stage / "evaluation.json").write_text(json.dumps(evaluation.to_dict(), indent=2))
    with (stage / "summary.txt").open("w") as handle:
        model.summary(print_fn=lambda line, **_: handle.write(line + "\n"))
    write_history_csv(history, stage / "history.csv")
    if history:
        reports.learning_curves(history, stage / "learning_curves.png")
    if evaluation.confusion is not None:
        reports.confusion_matrix_plot(
            evaluation.confusion, evaluation.classes, stage / "confusion_matrix.png"
        )
    if prepared.manifest.task == "detection":
        from pipelines.detection import plot_test_detections

        plot_test_detections(model, prepared, stage / "detections.png")
    if prepared.manifest.task == "regression":
        test = prepared.splits["test"]
        forecast = predict(model, test)
        naive = np.repeat(np.asarray(test.x)[:, -1, :1], forecast.shape[-1], axis=1)
        reports.forecast_plot(np.asarray(test.y), forecast, naive, stage / "forecast.png")


def write_history_csv(history: Mapping[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV (the learning curves `dvc plots` reads)."""
    names = sorted(history)
    rows = ["epoch," + ",".join(names)]
    epochs = len(next(iter(history.values()))) if history else 0
    for epoch in range(epochs):
        rows.append(f"{epoch}," + ",".join(f"{history[n][epoch]:.6g}" for n in names))
    path.write_text("\n".join(rows) + "\n")


def publish(stage: Path, run_dir: Path) -> None:
    """Replace `run_dir` with `stage` in one rename; the old outputs go only once it succeeded."""
    old = run_dir.with_name(run_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        run_dir.rename(old)
    stage.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def trainable_count(model: keras.Model) -> int:
    """Number of trainable parameters."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def log_model(model: keras.Model, examples: np.ndarray) -> None:
    """Log the Keras model in MLflow's format, with a signature inferred from real examples.

    A model with named outputs (a dict) gets a signature with one column per output.
    """
    if examples.dtype.kind in "UO":
        examples = examples.astype(str)
    outputs = model.predict(tf.constant(examples), verbose=0)
    if isinstance(outputs, dict):
        outputs = {name: np.asarray(values) for name, values in outputs.items()}
    mlflow.keras.log_model(
        model,
        name="model",
        signature=infer_signature(examples, outputs),
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )


def train_model(
    params: Params,
    model: str,
    dataset: str,
    preset: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train `model` on `dataset` and track it; raise KerasopsError on a user mistake.

    The MLflow run is marked FAILED when anything raises after it started. Under
    `multi_worker` every worker calls this alike; only the chief records and publishes the run.
    """
    config = resolve_run_config(params, model, dataset, preset, overrides)
    strategy = distribute.make_strategy(config.train)  # before any other TF op
    chief = distribute.is_chief(strategy)
    family = get_family(model)
    recipe = get_recipe(family.recipe)
    prepared = ensure_prepared(dataset, params)
    spec = recipe.input_spec(prepared, config.train)
    typed = family.config.from_dict({**config.model_values, "inputs": spec.to_dict()})
    keras.utils.set_random_seed(config.train.seed)
    with distribute.training_scope(config.train, strategy):
        built = recipe.compile(family.build(typed), spec, config.train)
    distribute.check_float32_outputs(built, config.train)
    fit_train = config.train.replace(
        batch_size=distribute.global_batch_size(config.train, strategy)
    )

    runs_root = params.path("artifacts") / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    run_dir = runs_root / run_name(model, dataset)
    if chief:
        tracking.configure(params)
    run_tags = {
        "model": model,
        "dataset": dataset,
        "preset": str(config.preset),
        "data.content_hash": prepared.manifest.content_hash,
        "params_hash": config.params_hash(),
        **lineage_tags(params, [dataset]),
        **(tags or {}),
    }
    with (
        tempfile.TemporaryDirectory(dir=runs_root, prefix=".stage-") as staging,
        contextlib.nullcontext() if chief else tracking.worker_store(Path(staging)),
        mlflow.start_run(run_name=run_name(model, dataset), tags=run_tags) as run,
    ):
        stage = Path(staging) / "run"
        stage.mkdir()
        mlflow.log_params(tracking.flatten({"model": config.model_values}))
        mlflow.log_params(tracking.flatten({"train": config.train.to_dict()}))
        mlflow.log_params(tracking.flatten({"data": prepared.manifest.config}))
        mlflow.log_param("trainable_params", trainable_count(built))
        mlflow.log_params(distribute.run_params(built, config.train, strategy))
        started = time.monotonic()
        callbacks = [
            *standard_callbacks(config.train, stage / "best.keras"),
            tracking.MlflowMetrics(),
        ]
        with distribute.training_scope(config.train, strategy):  # recipes build and compile too
            history = recipe.fit(built, prepared, fit_train, callbacks, typed)
        evaluation = recipe.evaluate(built, prepared, typed)
        built = recipe.serving_model(built, typed, evaluation)
        metrics = {
            **evaluation.metrics,
            "train_seconds": time.monotonic() - started,
            "epochs_run": float(len(next(iter(history.values()), []))),
        }
        mlflow.log_metrics(metrics)
        full_config = {
            **config.to_dict(),
            "model_config": typed.to_dict(),
            "run_id": run.info.run_id,
            "data": prepared.manifest.to_dict(),
        }
        write_outputs(stage, built, full_config, evaluation, history, prepared)
        (stage / "best.keras").unlink(missing_ok=True)
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=2))
        mlflow.log_artifacts(str(stage), artifact_path="outputs")
        mlflow.log_dict(full_config, "config.json")
        log_model(built, recipe.example_inputs(built, prepared))
        if chief:
            publish(stage, run_dir)
    return TrainResult(run.info.run_id if chief else "", run_dir, config, metrics, chief)
