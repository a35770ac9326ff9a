"""The train step: build, compile and fit one model on one prepared dataset, tracked in MLflow.

`train_model` is the one definition of training: the CLI, the DVC stages, the Prefect tasks and
the retraining cycle all call it with a resolved `RunConfig`. The family's recipe compiles,
fits, scores and picks the served model; this step adds the distribution strategy, MLflow
tracking with lineage tags, and the run folder `artifacts/runs/<model>-<dataset>/`, published
atomically so a failed run leaves the last good outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from kerasops.config import StrictConfig
from kerasops.data import PreparedData
from kerasops.models import InputSpec, check_task, get_family
from kerasops.models.recipe import Recipe
from kerasops.models.training import (
    EpochLogger,
    TrainConfig,
    raise_if_diverged,
    standard_callbacks,
    trainable_count,
)
from kerasops.pipelines.config import Params, RunConfig
from kerasops.pipelines.steps.prepare import ensure_prepared
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.lineage import lineage_tags
from kerasops.pipelines.training import distribute
from kerasops.pipelines.training.outputs import publish_run, write_outputs

MODEL_URI_TAG = "kerasops.model_uri"  # the logged model of a run: what retraining registers
PROCESS_TAG = "kerasops.process"  # host:pid of the process that trained the run
DATASET_INPUT_TRIES = 3  # a dataset input that two runs log at once is tried again


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished training run produced."""

    run_id: str  # "" on a non-chief multi-worker process, which records nothing
    run_dir: Path
    config: RunConfig
    metrics: dict[str, float]
    chief: bool = True


@dataclasses.dataclass(frozen=True)
class Built:
    """A compiled model ready to fit, with everything its fit needs."""

    model: keras.Model
    spec: InputSpec
    config: StrictConfig  # the family's typed config, inputs included
    recipe: Recipe
    prepared: PreparedData
    strategy: tf.distribute.Strategy
    fit_train: TrainConfig  # train settings with the global batch size

    @property
    def chief(self) -> bool:
        return distribute.is_chief(self.strategy)


def build_for_training(params: Params, run: RunConfig) -> Built:
    """Prepare the data if needed, check the family trains on its task, derive the InputSpec,
    then build and compile the model in the strategy's scope."""
    strategy = distribute.make_strategy(run.train)  # before any other TF op
    family = get_family(run.model)
    prepared = ensure_prepared(params, run.dataset)
    check_task(run.model, prepared.manifest)
    spec = family.recipe.input_spec(prepared, run.train)
    config = run.model_config(spec)
    keras.utils.set_random_seed(run.train.seed)
    with distribute.training_scope(run.train, strategy):
        model = family.recipe.compile(family.build(config), spec, run.train)
    distribute.check_float32_outputs(model, run.train)
    batch = distribute.global_batch_size(run.train, strategy)
    fit_train = run.train.replace(batch_size=batch)
    return Built(model, spec, config, family.recipe, prepared, strategy, fit_train)


@named("train")
def train_model(
    params: Params,
    run: RunConfig,
    tags: Mapping[str, str] | None = None,
    name: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train and track the run `run` describes; raise KerasopsError on a user mistake.

    `name` names the MLflow run and its folder under `artifacts/runs/` (default `run.name`,
    `<model>-<dataset>`; a tuning trial has its own); `callbacks` join the fit's (a trial's
    pruning). The MLflow run is marked FAILED when anything raises after it started. Under
    `multi_worker` every worker calls this alike; only the chief records and publishes the run.
    """
    name = name or run.name
    built = build_for_training(params, run)
    runs_root = params.path("artifacts") / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    if built.chief:
        tracking.configure(params)
    run_tags = {
        "model": run.model,
        "dataset": run.dataset,
        "preset": str(run.preset),
        "data.content_hash": built.prepared.manifest.content_hash,
        "params_hash": run.params_hash(),
        PROCESS_TAG: f"{socket.gethostname()}:{os.getpid()}",
        **lineage_tags(params, [run.dataset]),
        **(tags or {}),
    }
    system_metrics = params.tracking.system_metrics and built.chief
    if built.chief and params.tracking.mlflow_evaluate:
        # deferred: 3 s of imports, for runs that call mlflow.models.evaluate only. It must come
        # before start_run starts the system-metrics thread: the evaluators register through an
        # import hook that holds MLflow's import-hook lock while importing, and that thread's
        # first import (its pyspark probe) waits for the same lock while holding a module lock:
        # a `kerasops train` deadlocked there in the test suite.
        # (importlib, not `import mlflow.…`: that statement would make `mlflow` a local name of
        # this function, unbound on the runs that skip it)
        importlib.import_module("mlflow.models.evaluation.evaluator_registry")
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(params.tracking.system_metrics_interval_s)
    with (
        tempfile.TemporaryDirectory(dir=runs_root, prefix=".stage-") as staging,
        contextlib.nullcontext() if built.chief else tracking.worker_store(Path(staging)),
        mlflow.start_run(
            run_name=name, tags=run_tags, log_system_metrics=system_metrics
        ) as tracked,
    ):
        stage = Path(staging) / "run"
        stage.mkdir()
        log_data_input(params, run.dataset, run_tags[f"dvc.prepared.{run.dataset}"])
        metrics = fit_and_record(built, run, stage, tracked.info.run_id, callbacks)
        if built.chief and params.tracking.mlflow_evaluate:
            log_mlflow_evaluation(stage)
        if built.chief:
            (runs_root / name).parent.mkdir(parents=True, exist_ok=True)
            publish_run(stage, runs_root / name)
    run_id = tracked.info.run_id if built.chief else ""
    return TrainResult(run_id, runs_root / name, run, metrics, built.chief)


def fit_and_record(
    built: Built,
    run: RunConfig,
    stage: Path,
    run_id: str,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, float]:
    """Fit, score and log to the active MLflow run; write the run folder into `stage`."""
    log = tracking.MlflowRunLog()
    log_run_params(built, run)
    started = time.monotonic()
    callbacks = [
        *standard_callbacks(run.train, stage / "best.keras"),
        EpochLogger(log),
        *extra_callbacks,
    ]
    with distribute.training_scope(run.train, built.strategy):  # recipes build and compile too
        history = built.recipe.fit(
            built.model, built.prepared, built.fit_train, callbacks, built.config, log
        )
    raise_if_diverged(callbacks)  # the run ends FAILED, its last good outputs kept
    evaluation = built.recipe.evaluate(built.model, built.prepared, built.config)
    served = built.recipe.serving_model(built.model, built.config, evaluation)
    metrics = {
        **evaluation.metrics,
        "train_seconds": time.monotonic() - started,
        "epochs_run": float(len(next(iter(history.values()), []))),
    }
    mlflow.log_metrics(metrics)
    full_config = {
        **run.to_dict(),
        "model_config": built.config.to_dict(),
        "run_id": run_id,
        "data": built.prepared.manifest.to_dict(),
    }
    write_outputs(stage, served, full_config, evaluation, history, built.prepared, built.recipe)
    (stage / "best.keras").unlink(missing_ok=True)
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2))
    mlflow.log_artifacts(str(stage), artifact_path="outputs")
    mlflow.log_dict(full_config, "config.json")
    logged = log_model(served, built.recipe.example_inputs(served, built.prepared))
    mlflow.set_tag(MODEL_URI_TAG, logged.model_uri)
    return metrics


def log_mlflow_evaluation(stage: Path) -> None:
    """`mlflow.models.evaluate` on a classifier's test predictions (a static dataset: no second
    inference), so the run carries MLflow's own classifier metrics and plots too."""
    evaluation = json.loads((stage / "evaluation.json").read_text())
    confusion, classes = evaluation.get("confusion_matrix"), evaluation.get("classes")
    if not confusion or not classes:
        return  # not a classifier: the project's own metrics are the whole evaluation
    pairs = [
        (classes[i], classes[j])
        for i, counts in enumerate(confusion)
        for j, count in enumerate(counts)
        for _ in range(int(count))
    ]
    frame = pd.DataFrame(pairs, columns=["label", "prediction"])
    shap_log = logging.getLogger("mlflow.models.evaluation.evaluators.shap")
    level = shap_log.level
    shap_log.setLevel(logging.ERROR)  # it says, each run, that it skips string labels
    with warnings.catch_warnings(), contextlib.ExitStack() as restore:
        restore.callback(shap_log.setLevel, level)
        warnings.simplefilter("ignore")
        mlflow.models.evaluate(
            data=frame,
            targets="label",
            predictions="prediction",
            model_type="classifier",
            evaluator_config={"label_list": list(classes), "log_explainer": False},
        )


def log_run_params(built: Built, run: RunConfig) -> None:
    """The resolved config, the data's config and what the run actually used, as params."""
    mlflow.log_params(tracking.flatten({"model": run.model_values}))
    mlflow.log_params(tracking.flatten({"train": run.train.to_dict()}))
    mlflow.log_params(tracking.flatten({"data": built.prepared.manifest.config}))
    mlflow.log_param("trainable_params", trainable_count(built.model))
    mlflow.log_params(distribute.run_params(built.model, run.train, built.strategy))


def log_data_input(params: Params, dataset: str, version: str) -> None:
    """The prepared dataset as the run's MLflow dataset input: named as in params.yaml, its DVC
    hash as digest, its folder as source (the UI's Dataset column and Datasets panel)."""
    folder = params.path("prepared_data") / dataset
    with warnings.catch_warnings():  # MLflow registers its local source twice ("" and file:)
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(folder.as_uri())
    logged = MetaDataset(source, name=dataset, digest=version)
    for attempt in range(DATASET_INPUT_TRIES):
        try:
            mlflow.log_input(logged, context="training")
            return
        except MlflowException as exc:
            # two runs logging one new dataset at once (two `kerasops tune` processes on one
            # store): MLflow looks the dataset up, then inserts it, so the later insert breaks
            # the store's unique constraint; the row exists now, and the next try reuses it
            if attempt == DATASET_INPUT_TRIES - 1 or "unique constraint" not in str(exc).lower():
                raise
            time.sleep(0.2 * (attempt + 1))


def log_model(model: keras.Model, examples: np.ndarray) -> ModelInfo:
    """Log the Keras model in MLflow's format, with a signature inferred from real examples
    and named as the model's input and outputs (`image` -> `probabilities`)."""
    if examples.dtype.kind in "UO":
        examples = examples.astype(str)
    outputs: Any = model.predict(tf.constant(examples), verbose=0)
    if isinstance(outputs, dict):
        outputs = {name: np.asarray(values) for name, values in outputs.items()}
    else:
        outputs = {model.output_names[0]: np.asarray(outputs)}
    inputs = {model.inputs[0].name: examples}
    return mlflow.keras.log_model(
        model,
        name="model",
        signature=infer_signature(inputs, outputs),
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
