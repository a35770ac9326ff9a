"""MLflow tracking: the embedded SQLite store by default, a server when one is configured; and
`MlflowRunLog`, the RunLog a recipe reports through during the train step."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from kerasops.pipelines.config import Params


def tracking_uri(params: Params) -> str:
    """`MLFLOW_TRACKING_URI` if set, else params' tracking_uri, else SQLite under artifacts/."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri
    if uri:
        return uri
    return f"sqlite:///{params.path('artifacts') / 'mlflow.db'}"


def artifact_root(params: Params) -> str:
    """Where the embedded store keeps run artifacts."""
    return (params.path("artifacts") / "mlruns").as_uri()


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI's ML view


UI_FILE = "mlflow-ui.json"  # under paths.artifacts: where a running `kerasops ui` listens


def record_ui(params: Params, url: str) -> None:
    """Note that this process (about to become the MLflow UI) serves the store at `url`."""
    target = params.path("artifacts") / UI_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")


def ui_url(params: Params) -> str:
    """Base URL of the MLflow UI in use: the tracking server's own, else a running
    `kerasops ui` on this store (whatever its port), else `pipeline.mlflow_ui_url`."""
    uri = tracking_uri(params)
    if uri.startswith(("http://", "https://")):
        return uri
    try:
        running = json.loads((params.path("artifacts") / UI_FILE).read_text())
        os.kill(int(running["pid"]), 0)  # still there (signal 0 only checks)
        return str(running["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return params.pipeline.mlflow_ui_url


def configure(params: Params, retraining: bool = False) -> str:
    """Point MLflow at the store and select (creating if needed) the experiment: the training
    runs', or with `retraining` the one the retraining cycles are recorded in. Return its id.

    Experiments are marked as model-training ones, so MLflow's UI opens them on their runs
    rather than on its GenAI views.
    """
    uri = tracking_uri(params)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    point_mlflow_at(uri)
    name = params.tracking.experiment
    if retraining:
        name = params.tracking.retraining_experiment.format(experiment=name)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_root(params) if uri.startswith("sqlite:") else None
        experiment_id = mlflow.create_experiment(
            name, artifact_location=location, tags=dict([EXPERIMENT_KIND])
        )
    else:
        experiment_id = experiment.experiment_id
        if experiment.tags.get(EXPERIMENT_KIND[0]) is None:
            MlflowClient().set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def worker_store(folder: Path) -> Iterator[str]:
    """MLflow pointed at a throwaway SQLite store in `folder`; yield its experiment id.

    A non-chief multi-worker process runs the same steps as the chief (their collectives must
    pair up) but records into this store, which goes with `folder`, never into the real one.
    """
    previous = mlflow.get_tracking_uri()
    point_mlflow_at(f"sqlite:///{folder / 'worker-mlflow.db'}")
    try:
        experiment_id = mlflow.create_experiment(
            "worker", artifact_location=(folder / "worker-mlruns").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment_id)
        yield experiment_id
    finally:
        point_mlflow_at(previous)


def point_mlflow_at(uri: str) -> None:
    """`mlflow.set_tracking_uri`, leaving `MLFLOW_TRACKING_URI` as it was.

    MLflow exports the URI to the environment, where it would then win over every later
    project's params in this process.
    """
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config to MLflow params: `{"train": {"epochs": 3}}` -> `{"train.epochs": 3}`."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = str(value)
            flat[name] = text if len(text) <= 500 else text[:497] + "..."
    return flat


class MlflowRunLog:
    """A `RunLog` (kerasops.models.training) writing to the active MLflow run."""

    def params(self, values: Mapping[str, Any]) -> None:
        mlflow.log_params(dict(values))

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics(dict(values), step=step)

    def image(self, image: np.ndarray, key: str, step: int) -> None:
        mlflow.log_image(image, key=key, step=step)
