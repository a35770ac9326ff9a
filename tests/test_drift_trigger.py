"""Drift-triggered retraining on Prefect's own machinery. prefect.yaml's monitoring deployments
and the drift triggers of its retraining deployments are sound as data; and against a real
server on loopback (`prefect deploy --all` from the repository's prefect.yaml, a process worker
on the monitoring pool), the monitoring flow run on a served cnn's real logged requests: no
traffic is no verdict and no event; real digits emit `kerasops.drift.none` and start no
retraining run; washed-out digits emit `kerasops.drift.detected` and the automation starts a
retraining flow run of `retrain-cnn-digits`. An unreadable log file is skipped with a warning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from kerasops.pipelines.flows.monitoring import DRIFT, NO_DRIFT, NO_VERDICT, model_resource
from tests import services, test_prefect_deployments
from tests.conftest import write_params
from tests.test_prefect_deployments import (
    DEPLOYMENTS,
    PREFECT,
    ROOT,
    check_pool_and_schedule,
    cli,
    load_entrypoint,
    on_server,
    prefect_env,
)

server = test_prefect_deployments.server  # `prefect server start` on loopback, its API URL

MONITORS = {name: d for name, d in DEPLOYMENTS.items() if name.startswith("monitor-")}
RETRAINERS = {name: d for name, d in DEPLOYMENTS.items() if name.startswith("retrain-")}


@pytest.mark.parametrize("name", sorted(MONITORS))
def test_every_monitoring_deployment_watches_a_retrained_model(name):
    """Its flow imports and takes its parameters; it watches the model a retraining deployment
    serves; a compose worker polls its pool in a project folder; its schedule is a cron."""
    deployment = MONITORS[name]
    flow = load_entrypoint(deployment["entrypoint"])
    assert flow.name == "monitoring"
    assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    retrainer = RETRAINERS[name.replace("monitor-", "retrain-", 1)]
    served = f"{retrainer['parameters']['model']}-{retrainer['parameters']['dataset']}"
    assert deployment["parameters"]["model"] == served
    check_pool_and_schedule(deployment)


@pytest.mark.parametrize("name", sorted(RETRAINERS))
def test_every_retraining_deployment_is_triggered_by_its_models_drift(name):
    from prefect.events import DeploymentEventTrigger

    deployment = RETRAINERS[name]
    (spec,) = deployment["triggers"]
    trigger = DeploymentEventTrigger.model_validate(spec)
    served = f"{deployment['parameters']['model']}-{deployment['parameters']['dataset']}"
    assert trigger.expect == {DRIFT} and trigger.posture == "Reactive"
    assert trigger.match.model_dump()["prefect.resource.id"] == model_resource(served)
    assert {**deployment["parameters"], "force": True, "fresh": True} == trigger.parameters


def test_an_unreadable_log_file_is_skipped_with_a_count_and_a_warning(tmp_path, caplog):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from kerasops.pipelines.steps.monitor import logged_requests

    entry = prediction_log_pb2.PredictionLog()
    entry.log_metadata.model_spec.name = "mlp-digits"
    entry.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 4))))
    good = tmp_path / "p-1.tfrecord"
    with tf.io.TFRecordWriter(str(good)) as writer:
        for _ in range(3):
            writer.write(entry.SerializeToString())
    data = good.read_bytes()
    (tmp_path / "p-2.tfrecord").write_bytes(data[: len(data) - 7])  # cut mid-record
    (tmp_path / "p-3.tfrecord").write_bytes(b"not a tfrecord file at all")
    with caplog.at_level("WARNING"):
        logs = logged_requests(tmp_path, "mlp-digits", None)
    assert len(logs) == 3
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("skipped 2 unreadable prediction log file(s)")
    assert "p-2.tfrecord" in warning and "p-3.tfrecord" in warning


# -- the loop on a real server -----------------------------------------------------------------

MODEL = "cnn-digits"
WAIT = 15  # seconds without a retraining run after a no-drift event (a drift event's run
# appears within a second or two of it: the test below measures it)


@pytest.fixture(scope="module")
def loop(server, tmp_path_factory):
    """A project with cnn trained on digits and exported with a logging_config; prefect.yaml
    deployed (its automations created); a process worker polling the monitoring pool."""
    from kerasops.pipelines.cli import main as kerasops
    from kerasops.pipelines.config import load_params

    root = tmp_path_factory.mktemp("loop")
    write_params(root, monitoring={"drift_psi": 0.2, "min_requests": 10})
    shutil.copy(ROOT / "prefect.yaml", root / "prefect.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        assert kerasops(["train", "cnn", "--dataset", "digits", "--set", "epochs=3"]) == 0
        params = load_params(root / "params.yaml")
        log_every_request(params)
    for pool in ("cpu-pool", "gpu-pool"):
        cli(root, server, "work-pool", "create", pool, "--type", "process")
    cli(root, server, "deploy", "--all")
    assert f"retrain {MODEL} on drift" in cli(root, server, "automation", "ls")
    env = {**prefect_env(root / ".prefect", server), "KERASOPS_PROJECT_DIR": str(root)}
    env["PREFECT_WORKER_QUERY_SECONDS"] = "2"
    with (root / "worker.log").open("w") as handle:
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "cpu-pool", "--type", "process"],
            cwd=root.parent,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield params
    finally:
        services.stop_group(worker)


def log_every_request(params) -> None:
    """Export the trained cnn and give it a logging_config (every request)."""
    from kerasops.pipelines.steps.export import export_model
    from kerasops.serving.prediction_log import LoggingSpec
    from kerasops.serving.repository import entries_to_text, mapping_for, read_models_config
    from kerasops.serving.sources import load_from_folder

    config = params.serving.at_root(Path(params.root))
    export_model(
        params, load_from_folder(params.path("artifacts") / "runs" / MODEL), serving=config
    )
    path, mapping = Path(config.models_config), mapping_for(config)
    entries = read_models_config(path, mapping)
    logged = [dataclasses.replace(e, logging=LoggingSpec("cnn/p", 1.0)) for e in entries]
    path.write_text(entries_to_text(logged, mapping))


def traffic(params, scale: float | None) -> None:
    """Replace the logged traffic: 180 test digits (times `scale`) through the embedded
    server's REST API, or none with None."""
    from kerasops.data import load_prepared
    from kerasops.serving.server import EmbeddedServer, model_entries

    shutil.rmtree(params.path("artifacts") / "prediction_logs", ignore_errors=True)
    if scale is None:
        return
    test = np.asarray(load_prepared("digits", params.path("prepared_data")).splits["test"].x)
    images = test[np.random.default_rng(0).permutation(len(test))][:180] * scale
    config = params.serving.at_root(Path(params.root))
    config = dataclasses.replace(config, rest_port=0, grpc_port=0)
    embedded = EmbeddedServer(config, *model_entries(config))
    embedded.start()
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{embedded.rest_port}", timeout=30)
        for i in range(0, len(images), 4):
            body = {"instances": images[i : i + 4].tolist()}
            assert http.post(f"/v1/models/{MODEL}:predict", json=body).status_code == 200
    finally:
        embedded.stop()


def monitor(params, api: str, timeout: float = 300):
    """Run the monitor-cnn-digits deployment through the worker; its finished flow run."""
    from prefect.client.orchestration import get_client

    root = Path(params.root)
    output = cli(root, api, "deployment", "run", f"monitoring/monitor-{MODEL}")
    flow_run_id = output.split("/runs/flow-run/")[1].split()[0].strip("/")

    async def finished():
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                run = await client.read_flow_run(flow_run_id)
                if run.state and run.state.is_final():
                    return run
                await asyncio.sleep(1)
        raise AssertionError(f"{flow_run_id}: {services.tail(root / 'worker.log')}")

    return on_server(api, finished)


def triggered_runs(api: str) -> list:
    """The flow runs of retrain-cnn-digits not created by its cron schedule."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[f"retrain-{MODEL}"])
                )
            )
        return [run for run in runs if not run.auto_scheduled]

    return on_server(api, read)


def events(api: str, name: str, model: str = MODEL) -> list[dict]:
    """The events `name` about `model` on the server, newest first."""
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [model_resource(model)]}}}
    response = httpx.post(f"{api}/events/filter", json={**body, "limit": 50}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def wait_for(condition, timeout: float, every: float = 1.0):
    """Poll `condition()` until it is truthy (its value) or `timeout` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    return None


@pytest.mark.slow
@pytest.mark.integration
def test_no_traffic_is_no_verdict_and_no_event(server, loop):
    traffic(loop, None)
    before = len(events(server, DRIFT)) + len(events(server, NO_DRIFT))
    run = monitor(loop, server)
    assert run.state.is_completed() and run.state.name == NO_VERDICT, run.state
    assert run.state.message.startswith(f"no verdict: 0 logged requests of {MODEL}")
    time.sleep(3)  # an event, had one been sent, reaches the server within this
    assert len(events(server, DRIFT)) + len(events(server, NO_DRIFT)) == before


@pytest.mark.slow
@pytest.mark.integration
def test_live_digits_emit_no_drift_and_start_no_retraining(server, loop):
    traffic(loop, 1.0)
    before, seen = len(triggered_runs(server)), len(events(server, NO_DRIFT))
    run = monitor(loop, server)
    assert run.state.is_completed() and run.state.message == f"no drift ({NO_DRIFT})", run.state
    (event,) = wait_for(lambda: (found := events(server, NO_DRIFT))[: len(found) - seen], 30)
    assert event["payload"]["drifted"] == [] and event["payload"]["requests"] == 45
    print(f"no drift: PSI {event['payload']['psi']}, check {run.total_run_time}")
    time.sleep(WAIT)
    assert len(triggered_runs(server)) == before


@pytest.mark.slow
@pytest.mark.integration
def test_washed_out_digits_emit_drift_and_start_a_retraining_run(server, loop):
    traffic(loop, 0.3)  # a dimmer camera
    before, seen = {run.id for run in triggered_runs(server)}, len(events(server, DRIFT))
    run = monitor(loop, server)
    assert run.state.is_completed() and run.state.message.startswith("drift in"), run.state
    (event,) = wait_for(lambda: (found := events(server, DRIFT))[: len(found) - seen], 30)
    assert "input values" in event["payload"]["drifted"]
    assert event["payload"]["psi"]["input values"] > 0.2
    print(f"drift: PSI {event['payload']['psi']}, check {run.total_run_time}")
    started = time.monotonic()
    new = wait_for(lambda: [r for r in triggered_runs(server) if r.id not in before], 60)
    assert new, "no retraining flow run within 60 s of the drift event"
    (retraining,) = new
    print(f"retraining run {retraining.name} {time.monotonic() - started:.1f}s after the check")
    assert retraining.parameters["force"] and retraining.parameters["fresh"]
    assert (retraining.parameters["model"], retraining.parameters["dataset"]) == ("cnn", "digits")


CRON = "30 2 * * 1-5"  # unlike prefect.yaml's: the deployment as `schedule` serves it shows


@pytest.mark.slow
@pytest.mark.integration
def test_schedule_with_monitor_serves_both_deployments_and_the_drift_trigger(server, tmp_path):
    """`kerasops schedule --monitor` in its own process against the server; stopped once both
    deployments and the automation are registered."""
    from prefect.client.orchestration import get_client

    write_params(tmp_path)
    command = [*PREFECT[:1], "-m", "kerasops", "--params", str(tmp_path / "params.yaml")]
    command += ["schedule", "cnn", "--dataset", "digits", "--cron", CRON]
    command += ["--monitor", "*/30 * * * *", "--monitor-since", "30m"]
    env = prefect_env(tmp_path / ".prefect", server)
    log = tmp_path / "schedule.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT
        )

    async def registered():
        """Both deployments as this process serves them, and their drift automation."""
        async with get_client() as client:
            monitor = await client.read_deployment_by_name(f"monitoring/monitor-{MODEL}")
            retrain = await client.read_deployment_by_name(f"retraining/retrain-{MODEL}")
            automations = [
                a
                for a in await client.read_automations_by_name(f"retrain {MODEL} on drift")
                if a.actions[0].deployment_id == retrain.id
            ]
        crons = [s.schedule.cron for s in (*monitor.schedules, *retrain.schedules)]
        if crons == ["*/30 * * * *", CRON] and automations:
            return monitor, automations
        return None

    def found():
        assert process.poll() is None, services.tail(log)
        try:
            return on_server(server, registered)
        except Exception:  # noqa: BLE001 - not registered yet
            return None

    try:
        monitor, automations = wait_for(found, 150) or (None, [])
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert monitor, f"not registered within 150 s: {services.tail(log)}"
    assert monitor.parameters == {
        "model": MODEL,
        "since": "30m",
        "params_path": str(tmp_path / "params.yaml"),
    }
    (automation,) = automations  # the served deployment's own (any earlier one replaced)
    assert automation.trigger.expect == {DRIFT}
    assert automation.trigger.match.model_dump()["prefect.resource.id"] == model_resource(MODEL)
    assert automation.actions[0].parameters["fresh"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["--monitor", "every hour"], "--cron 'every hour' is not a valid cron expression"),
        (["--monitor", "0 * * * *", "--monitor-since", "lately"], "expected a duration"),
    ],
)
def test_a_bad_monitor_schedule_is_one_line_and_exit_2(project, monkeypatch, capsys, args, message):
    from kerasops.pipelines.cli import main as kerasops

    write_params(project)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    command = ["schedule", "mlp", "--dataset", "digits", "--cron", "0 3 * * *", *args]
    assert kerasops(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
