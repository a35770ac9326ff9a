"""The scale-out services for real: an MLflow tracking server and a Prefect server, both on a
PostgreSQL cluster on loopback, and kerasops pointed at them by URL only.

One Prefect `training_flow` run (in a child process that sees only `PREFECT_API_URL` and
`MLFLOW_TRACKING_URI`) trains a model; the test then reads the flow run back from the Prefect
server, the MLflow run, its metrics and its registered model back through the MLflow client,
and checks that both services really wrote to PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.data import load_prepared
from tests import services
from tests.conftest import write_params

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

FLOW = """
import json, sys
from kerasops.pipelines.flows.training import training_flow
state = training_flow("mlp", "digits", overrides=sys.argv[1:], return_state=True)
result = state.result()
ids = {"run_id": result.run_id, "flow_run_id": str(state.state_details.flow_run_id)}
print("FLOW " + json.dumps(ids))
"""


@pytest.fixture(scope="module")
def database():
    """A PostgreSQL cluster with one database per service."""
    with services.postgres_cluster() as url:
        yield {name: services.create_database(url, name) for name in ("mlflow", "prefect")}


@pytest.fixture(scope="module")
def mlflow_server(database, tmp_path_factory):
    """`mlflow server` on PostgreSQL, proxying a local artifact root over HTTP; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = services.free_port()
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    backend = database["mlflow"].replace("postgresql://", "postgresql+psycopg2://")
    command += ["--backend-store-uri", backend, "--workers", "1"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner needed
    with services.server(command, f"{url}/health", root / "server.log", env=env):
        yield url


@pytest.fixture(scope="module")
def prefect_server(database, tmp_path_factory):
    """`prefect server start` on PostgreSQL (asyncpg driver); yields its API URL."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = services.free_port()
    env = prefect_env(root)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = database["prefect"].replace(
        "postgresql://", "postgresql+asyncpg://"
    )
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-ui", "--analytics-off"]
    api = f"http://127.0.0.1:{port}/api"
    with services.server(command, f"{api}/health", root / "server.log", env=env):
        yield api


def prefect_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "PREFECT_HOME": str(home), "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def flow_run(mlflow_server, prefect_server, tmp_path_factory):
    """One training flow run against both servers; yields its ids, project and wall time."""
    project = tmp_path_factory.mktemp("project")
    write_params(project)
    env = prefect_env(project / ".prefect")
    env.update(PREFECT_API_URL=prefect_server, MLFLOW_TRACKING_URI=mlflow_server)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", FLOW, "epochs=3", "batch_size=32"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ids = json.loads(done.stdout.split("FLOW ", 1)[1].splitlines()[0])
    return {**ids, "project": project, "seconds": time.monotonic() - started}


def test_training_over_http_is_tracked_in_the_mlflow_server_on_postgresql(
    flow_run, mlflow_server, database
):
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(flow_run["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded over HTTP
    assert run.data.params["train.epochs"] == "3" and run.data.tags["model"] == "mlp"
    assert run.data.tags["prefect.flow_run_id"] == flow_run["flow_run_id"]
    history = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    assert len(history) == 3 and history[-1] < history[0]
    assert run.data.metrics["test_accuracy"] > 0.8
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    assert {"outputs/model.keras", "outputs/metrics.json"} <= artifacts

    rows = services.query(
        database["mlflow"], f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'"
    )
    assert rows == [["FINISHED"]]  # the server's backend store really is PostgreSQL


def test_registered_model_reads_back_and_predicts(flow_run, mlflow_server, database):
    mlflow.set_tracking_uri(mlflow_server)
    try:
        version = mlflow.register_model(f"runs:/{flow_run['run_id']}/model", "mlp-digits")
        client = MlflowClient(tracking_uri=mlflow_server)
        stored = client.get_model_version("mlp-digits", version.version)
        assert stored.run_id == flow_run["run_id"] and stored.status == "READY"
        model = mlflow.keras.load_model(f"models:/mlp-digits/{version.version}")
    finally:
        mlflow.set_tracking_uri(None)
    test = load_prepared("digits", flow_run["project"] / "data/prepared").splits["test"]
    probabilities = model.predict(test.x[:64], verbose=0)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == test.y[:64]))
    assert accuracy > 0.8
    names = services.query(database["mlflow"], "SELECT name FROM registered_models")
    assert names == [["mlp-digits"]]


def test_flow_run_is_recorded_by_the_prefect_server_on_postgresql(
    flow_run, prefect_server, database
):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with SyncPrefectClient(api=prefect_server) as client:
        run = client.read_flow_run(flow_run["flow_run_id"])
        flow = client.read_flow(run.flow_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )
    assert flow.name == "training" and run.state.is_completed()
    assert {t.name.rsplit("-", 1)[0] for t in tasks} >= {"prepare", "validate", "train"}
    assert all(t.state.is_completed() for t in tasks)
    rows = services.query(
        database["prefect"], f"SELECT state_type FROM flow_run WHERE id = '{run.id}'"
    )
    assert rows == [["COMPLETED"]]
    print(f"integration flow run: {flow_run['seconds']:.1f}s")
