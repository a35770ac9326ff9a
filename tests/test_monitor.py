"""`kerasops monitor`: a served model's logged traffic against its training data. Real digits
answered by the embedded server read as no drift (exit 0); washed-out images read as drift
(exit 1); too few logs are one line and exit 3 (no verdict); a mistake is one line and exit 2."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.data import load_prepared
from kerasops.pipelines.cli import main as kerasops
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps.monitor import parse_since
from kerasops.pipelines.tracking import store as tracking
from kerasops.serving.prediction_log import LoggingSpec
from kerasops.serving.repository import entries_to_text, mapping_for, read_models_config
from kerasops.serving.server import EmbeddedServer, model_entries
from tests.conftest import write_params


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A project with the mlp trained on digits."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, monitoring={"drift_psi": 0.2, "min_requests": 10})
    assert kerasops(["train", "mlp", "--dataset", "digits", "--set", "epochs=2"]) == 0
    return load_params(tmp_path / "params.yaml")


def log_every_request(params) -> None:
    """Export the trained model and give it a logging_config (every request)."""
    from kerasops.pipelines.steps.export import export_model
    from kerasops.serving.sources import load_from_folder

    config = params.serving.at_root(Path(params.root))
    export_model(
        params, load_from_folder(params.path("artifacts") / "runs/mlp-digits"), serving=config
    )
    path, mapping = Path(config.models_config), mapping_for(config)
    entries = read_models_config(path, mapping)
    logged = [dataclasses.replace(e, logging=LoggingSpec("mlp/p", 1.0)) for e in entries]
    path.write_text(entries_to_text(logged, mapping))


def send(params, images: np.ndarray) -> None:
    config = params.serving.at_root(Path(params.root))
    config = dataclasses.replace(config, rest_port=0, grpc_port=0)
    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)
        for i in range(0, len(images), 4):
            body = {"instances": images[i : i + 4].tolist()}
            assert http.post("/v1/models/mlp-digits:predict", json=body).status_code == 200
    finally:
        server.stop()


@pytest.mark.slow  # trains and serves a model
def test_live_digits_are_no_drift_and_washed_out_ones_are(trained, capfd):
    project = trained
    log_every_request(project)
    test = np.asarray(load_prepared("digits", project.path("prepared_data")).splits["test"].x)
    test = test[np.random.default_rng(0).permutation(len(test))]  # the split is class-ordered
    send(project, test[:180])  # PSI over 10 classes needs hundreds of rows
    assert kerasops(["monitor", "mlp-digits", "--since", "1h"]) == 0
    out = capfd.readouterr().out
    assert "45 logged requests (180 rows)" in out and "no drift" in out

    shutil.rmtree(project.path("artifacts") / "prediction_logs")
    send(project, test[180:360] * 0.3)  # a dimmer camera
    assert kerasops(["monitor", "mlp-digits"]) == 1
    out = capfd.readouterr().out
    assert "**drift** in input values" in out
    summary = json.loads((project.path("artifacts") / "monitoring/mlp-digits.json").read_text())
    assert summary["scores"]["input values"] > 0.2 and summary["dataset"] == "digits"

    tracking.configure(project, retraining=True)
    run = MlflowClient().get_run(mlflow.last_active_run().info.run_id)
    assert run.data.tags["kind"] == "monitoring" and run.data.tags["drift"] != "none"
    assert run.data.metrics["psi.input_values"] == pytest.approx(summary["scores"]["input values"])


def test_an_unknown_model_or_a_bad_window_is_one_line_and_exit_2(project, capfd):
    assert kerasops(["monitor", "nobody"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no served model named 'nobody'" in err
    assert kerasops(["monitor", "mlp-digits", "--since", "yesterday"]) == 2
    assert "expected a duration" in capfd.readouterr().err
    assert parse_since("1h30m") == 5400


def test_a_served_model_with_too_few_logs_is_no_verdict_and_exit_3(project, capfd):
    serving = load_params(project / "params.yaml").serving.at_root(project)
    (Path(serving.model_repository) / "quiet").mkdir(parents=True)  # exported, never called
    assert kerasops(["monitor", "quiet", "--since", "1h"]) == 3
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("no verdict: 0 logged requests of quiet under ")
    assert "in the last 1h" in line and "monitoring.min_requests" in line
    assert not (project / "artifacts" / "monitoring").exists()  # no report for no verdict
