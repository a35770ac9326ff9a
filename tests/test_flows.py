"""Prefect flows under Prefect's test harness: lineage tags, the report artifact, retries only
for transient failures, and a failed validation stopping the pipeline before any training."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from kerasops.errors import ConfigError
from kerasops.pipelines.cli import main
from kerasops.pipelines.config import load_params
from kerasops.pipelines.flows.runner import retry_on_transient
from kerasops.pipelines.flows.training import training_flow
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.lineage import dataset_version
from tests.conftest import write_params

pytestmark = pytest.mark.slow  # Prefect flows under Prefect's test server

IDENTITY = {
    "GIT_AUTHOR_NAME": "kerasops tests",
    "GIT_AUTHOR_EMAIL": "tests@kerasops.invalid",
    "GIT_COMMITTER_NAME": "kerasops tests",
    "GIT_COMMITTER_EMAIL": "tests@kerasops.invalid",
}


def committed_project(root: Path, **sections) -> Path:
    """A params.yaml in a fresh git repository with one commit."""
    root.mkdir(parents=True, exist_ok=True)
    params_path = write_params(root, **sections)
    env = {**os.environ, **IDENTITY}
    for command in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "project"]):
        subprocess.run(["git", *command], cwd=root, env=env, check=True, capture_output=True)
    return params_path


@pytest.fixture
def no_tracking_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def read_artifact(key: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        response = client.request("GET", f"/artifacts/{key}/latest")
    assert response.status_code == 200, response.text
    return response.json()


def test_training_flow_tags_lineage_and_publishes_a_report(
    prefect_harness, no_tracking_server, tmp_path, capsys
):
    params_path = committed_project(tmp_path / "project", tracking={"experiment": "flows"})
    state = training_flow(
        "mlp", "digits", overrides=["epochs=1"], params_path=str(params_path), return_state=True
    )
    result = state.result()
    flow_run_id = str(state.state_details.flow_run_id)

    params = load_params(params_path)
    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    tags = run.data.tags
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=params_path.parent, capture_output=True, text=True
    ).stdout.strip()
    assert run.info.status == "FINISHED"
    assert tags["git.commit"] == head and tags["git.dirty"] == "false"
    assert tags["dvc.prepared.digits"] == dataset_version(params, "digits")
    assert tags["dvc.prepared.digits"].endswith(".dir")
    assert tags["dvc.prepared.digits.recorded"] == "untracked"
    assert tags["params_hash"] == result.config.params_hash()
    assert tags["prefect.flow_run_id"] == flow_run_id and tags["prefect.flow_name"] == "training"

    artifact = read_artifact("training-mlp-digits")
    assert artifact["flow_run_id"] == flow_run_id and artifact["type"] == "markdown"
    markdown = artifact["data"]
    assert result.run_id[:12] in markdown and f"/runs/{result.run_id}" in markdown
    assert "test_accuracy" in markdown and "Validation of `digits`: passed" in markdown

    capsys.readouterr()
    assert main(["--params", str(params_path), "lineage", result.run_id]) == 0
    chain = capsys.readouterr().out
    assert head in chain and flow_run_id in chain and tags["dvc.prepared.digits"] in chain
    assert main(["--params", str(params_path), "lineage", "0" * 32]) == 2
    assert capsys.readouterr().err.startswith(f"error: no MLflow run {'0' * 32!r}")


def test_a_failed_validation_stops_the_pipeline_before_training(
    prefect_harness, no_tracking_server, tmp_path, capsys
):
    root = tmp_path / "project"
    (root / "data" / "raw" / "dupes").mkdir(parents=True)
    rows = [f"story number {i} about {topic},{topic}" for i in range(30) for topic in "ab"]
    (root / "data" / "raw" / "dupes" / "news.csv").write_text(
        "text,label\n" + "\n".join(rows * 3) + "\n"  # every story three times: leaks into test
    )
    params_path = committed_project(
        root,
        tracking={"experiment": "flows-invalid"},
        datasets={"dupes": {"source": "text_csv", "path": "dupes/news.csv"}},
        pipeline={
            "datasets": ["dupes"],
            "runs": {"transformer-dupes": {"model": "transformer", "dataset": "dupes"}},
            "retries": 0,
        },
    )
    assert main(["--params", str(params_path), "run-pipeline"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: validation of 'dupes' failed: split_leakage:")
    assert not (root / "artifacts" / "runs").exists()
    report = (root / "artifacts" / "validation" / "dupes.md").read_text()
    assert "| split_leakage | fail |" in report
    tracking.configure(load_params(params_path))
    experiment = MlflowClient().get_experiment_by_name("flows-invalid")
    assert MlflowClient().search_runs([experiment.experiment_id]) == []


def test_only_transient_failures_are_retried():
    from prefect.states import Failed

    assert retry_on_transient(None, None, Failed(data=OSError("connection reset"))) is True
    assert retry_on_transient(None, None, Failed(data=ConfigError("unknown key x"))) is False
