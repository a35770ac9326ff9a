"""Training on real data: the loss falls, the metric beats its baseline, MLflow has it all."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.data import load_prepared
from kerasops.models.evaluation import predict
from kerasops.pipelines.config import load_params
from kerasops.pipelines.tracking import store as tracking
from tests.conftest import train_run


def losses(run_id: str, key: str = "loss") -> list[float]:
    return [m.value for m in MlflowClient().get_metric_history(run_id, key)]


@pytest.fixture
def params(project):
    return load_params(project / "params.yaml")


@pytest.mark.slow
def test_cnn_on_digits_beats_majority_and_is_fully_tracked(params, project):
    # a sample every second: a run shorter than the default 5 s interval would have none
    watched = params.tracking.replace(mlflow_evaluate=True, system_metrics_interval_s=1.0)
    params = params.replace(tracking=watched)
    result = train_run(params, "cnn", "digits", preset="cnn_small", overrides=["epochs=6"])
    metrics = result.metrics
    assert metrics["test_accuracy"] > 0.85 > metrics["baseline_majority_accuracy"] + 0.5

    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == mlflow.get_experiment_by_name("tests").experiment_id
    assert run.data.params["model.filters"] == "[32, 64]"
    assert run.data.params["train.epochs"] == "6"
    assert run.data.tags["dataset"] == "digits" and run.data.tags["data.content_hash"]
    history = losses(result.run_id)
    assert len(history) == 6 and history[-1] < history[0]
    assert len(losses(result.run_id, "val_accuracy")) == 6
    for key in ("test_accuracy", "test_macro_precision", "test_macro_recall", "test_macro_f1"):
        assert 0.0 <= run.data.metrics[key] <= 1.0

    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "outputs")}
    for name in (
        "learning_curves.png",
        "confusion_matrix.png",
        "summary.txt",
        "config.json",
        "metrics.json",
        "history.csv",
        "model.keras",
    ):
        assert f"outputs/{name}" in artifacts

    on_disk = json.loads((result.run_dir / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    confusion = json.loads((result.run_dir / "evaluation.json").read_text())["confusion_matrix"]
    assert (
        np.asarray(confusion).sum()
        == load_prepared("digits", params.path("prepared_data")).manifest.splits["test"]
    )

    logged = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    test = load_prepared("digits", params.path("prepared_data")).splits["test"]
    import keras

    local = keras.saving.load_model(result.run_dir / "model.keras")
    np.testing.assert_allclose(predict(logged, test), predict(local, test), atol=1e-5)
    assert_tracked_as_mlflow_users_expect(run, params)


@pytest.mark.slow
def test_lstm_forecast_beats_the_naive_last_value(params):
    result = train_run(
        params, "rnn", "sunspots", preset="rnn_lstm_small", overrides=["epochs=40", "patience=8"]
    )
    assert result.metrics["test_mae"] < result.metrics["baseline_naive_mae"]
    assert (result.run_dir / "forecast.png").exists()
    history = losses(result.run_id)
    assert min(history) < history[0]


@pytest.mark.slow
def test_transformer_on_bbc_news_beats_majority_by_20_points(params):
    result = train_run(
        params,
        "transformer",
        "bbc_news",
        preset="transformer_tiny",
        overrides=["epochs=4", "sequence_length=128", "max_tokens=8000"],
    )
    metrics = result.metrics
    assert metrics["test_accuracy"] >= metrics["baseline_majority_accuracy"] + 0.20
    history = losses(result.run_id)
    assert history[-1] < history[0]


@pytest.mark.slow
def test_failed_run_is_marked_failed_and_keeps_the_last_good_outputs(params, monkeypatch):
    first = train_run(params, "mlp", "digits", overrides=["epochs=1"])
    before = (first.run_dir / "metrics.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr("kerasops.models.recipe.evaluate_task", broken)
    with pytest.raises(RuntimeError):
        train_run(params, "mlp", "digits", overrides=["epochs=1"])
    tracking.configure(params)
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("tests").experiment_id],
        order_by=["attributes.start_time DESC"],
    )
    assert runs[0].info.status == "FAILED"
    assert (first.run_dir / "metrics.json").read_text() == before
    assert not list(first.run_dir.parent.glob(".stage-*"))


def assert_tracked_as_mlflow_users_expect(run, params) -> None:
    """The dataset input with its DVC hash, an ML (not GenAI) experiment, system metrics, a
    signature named like the model, epochs counted from 1."""
    from kerasops.pipelines.tracking.lineage import dataset_version

    client = MlflowClient()
    contexts = {
        {t.key: t.value for t in i.tags}.get("mlflow.data.context"): i
        for i in run.inputs.dataset_inputs
    }
    data = contexts["training"]  # mlflow.models.evaluate logs its test predictions too
    assert len(contexts) == 2
    assert data.dataset.name == "digits"
    assert data.dataset.digest == dataset_version(params, "digits")
    assert data.dataset.source_type == "local" and "prepared/digits" in data.dataset.source
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
    model = mlflow.models.get_model_info(run.data.tags["kerasops.model_uri"])
    assert model.signature.inputs.input_names() == ["image"]
    assert model.signature.outputs.input_names() == ["probabilities"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")][0] == 1
    # mlflow.models.evaluate on the same test predictions agrees with the project's own score
    assert run.data.metrics["accuracy_score"] == pytest.approx(run.data.metrics["test_accuracy"])
    assert run.data.metrics["example_count"] == sum(map(sum, run_confusion(run)))


def run_confusion(run) -> list[list[int]]:
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="outputs")
    return json.loads((Path(path) / "evaluation.json").read_text())["confusion_matrix"]


_IMPORT_ORDER_PROBE = """
import json, sys
from mlflow.system_metrics import system_metrics_monitor as monitor
seen = []
start = monitor.SystemMetricsMonitor.start
def recording(self):
    seen.append("mlflow.models.evaluation.evaluator_registry" in sys.modules)
    start(self)
monitor.SystemMetricsMonitor.start = recording
from kerasops.pipelines.cli import main
code = main(["train", "mlp", "--dataset", "digits", "--set", "epochs=1"])
print(json.dumps({"code": code, "seen": seen}))
"""


@pytest.mark.slow
def test_mlflow_evaluators_are_imported_before_the_system_metrics_thread_starts(project):
    # The evaluators register through an import hook under MLflow's import-hook lock; imported
    # first while the system-metrics thread probes for pyspark, the two threads deadlocked.
    import subprocess
    import sys

    import yaml

    from kerasops.pipelines.steps.prepare import prepare

    params_path = project / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["tracking"].update(mlflow_evaluate=True, system_metrics=True)
    params_path.write_text(yaml.safe_dump(raw))
    prepare(load_params(params_path), "digits")
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ORDER_PROBE],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "seen": [True]}
