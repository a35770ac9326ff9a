"""Shared fixtures: an isolated project folder (params.yaml, data, artifacts) per test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_params(root: Path, **sections) -> Path:
    """Write a params.yaml under `root` whose paths all stay inside `root`."""
    params = {
        "paths": {
            "artifacts": "artifacts",
            "raw_data": "data/raw",
            "prepared_data": "data/prepared",
        },
        # mlflow.models.evaluate costs seconds a run: on where a test asks for it
        "tracking": {"experiment": "tests", "mlflow_evaluate": False},
        **sections,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def train_run(params, model: str, dataset: str, preset=None, overrides=(), tags=None):
    """Resolve a run config the way the CLI does, then train it (the train step's one input)."""
    from kerasops.pipelines.config import resolve_run_config
    from kerasops.pipelines.steps.train import train_model

    run = resolve_run_config(params, model, dataset, preset, overrides)
    return train_model(params, run, tags=tags)


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_kept():
    """`MLFLOW_TRACKING_URI` as it was before each test: `mlflow.set_tracking_uri` exports it,
    and a later test in the same process would then read that test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder as the working directory, with no tracking server configured."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for the whole session (it takes seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry

    with prefect_test_harness(server_startup_timeout=180):
        yield
