"""prefect.yaml's retraining deployments: each one sound on its own (checked as data), and the
path a team with a Prefect server takes, end to end: a real server on loopback (SQLite), the
real CLI (`work-pool create`, `work-pool ls`, `deploy --all`, `deployment ls`, `deployment run`,
`flow-run ls`), a process worker started in the project folder, and flow runs that promote,
find no new data, and fail on a user's mistake with one line while the worker keeps polling.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kerasops.config import load_yaml
from kerasops.errors import ConfigError
from kerasops.pipelines.flows.deploy import enter_project
from tests import services
from tests.conftest import write_params

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())  # merge keys resolved
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
DEMO_RUNS = ("cnn-digits", "rnn-sunspots", "transformer-bbc_news")


def load_entrypoint(entrypoint: str):
    module, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(module), name)


def check_deployment(deployment: dict) -> None:
    """One deployment of prefect.yaml is sound: its flow imports, its parameters are the flow's,
    its model and dataset are a `pipeline.runs` entry, a compose worker polls its pool in a
    folder holding params.yaml and data, and its schedule is a cron with a timezone."""
    from prefect import Flow

    flow = load_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    parameters = deployment["parameters"]
    runs = load_yaml((ROOT / "params.yaml").read_text())["pipeline"]["runs"]
    run = f"{parameters['model']}-{parameters['dataset']}"
    assert deployment["name"] == f"retrain-{run}" and run in runs
    check_pool_and_schedule(deployment)


def check_pool_and_schedule(deployment: dict) -> None:
    """A compose worker polls the deployment's pool in a folder holding params.yaml and data,
    and its schedule is a cron with a timezone."""
    from prefect.client.schemas.schedules import CronSchedule

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    pool = deployment["work_pool"]["name"]
    workers = [
        service
        for service in compose["services"].values()
        if "--pool" in (entry := service.get("entrypoint") or [])
        and entry[entry.index("--pool") + 1] == pool
    ]
    assert workers, f"no docker-compose worker polls the deployment's pool {pool!r}"
    for service in workers:
        project = service["environment"]["KERASOPS_PROJECT_DIR"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts.get(project) == "./" or mounts.get(f"{project}/params.yaml")
    (schedule,) = deployment["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


@pytest.mark.parametrize("name", sorted(n for n in DEPLOYMENTS if n.startswith("retrain-")))
def test_every_deployment_is_sound(name):
    check_deployment(DEPLOYMENTS[name])


SCORERS = {name: d for name, d in DEPLOYMENTS.items() if name.startswith("score-")}


def test_scheduled_batch_scoring_has_a_deployment():
    assert "score-cnn-digits" in SCORERS


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_batch_scoring_deployment_is_sound(name):
    """Its flow imports and takes its parameters (every required one given, a valid job); it
    scores a dataset of the model a retraining deployment serves, under the name `kerasops
    predict-batch --cron` gives it; a compose worker polls its pool; its schedule is a cron."""
    from kerasops.pipelines.flows.batch import deployment_name
    from kerasops.pipelines.steps.predict_batch import BatchJob

    deployment = SCORERS[name]
    flow = load_entrypoint(deployment["entrypoint"])
    assert flow.name == "batch-scoring"
    parameters = deployment["parameters"]
    accepted = inspect.signature(flow.fn).parameters
    assert set(parameters) <= set(accepted)
    required = {k for k, p in accepted.items() if p.default is inspect.Parameter.empty}
    assert required <= set(parameters)
    job = {k: v for k, v in parameters.items() if k != "params_path"}
    if "output_format" in job:
        job["format"] = job.pop("output_format")
    BatchJob(**job).check()
    assert name == deployment_name(parameters["model"])
    served = {
        f"{d['parameters']['model']}-{d['parameters']['dataset']}": d["parameters"]["dataset"]
        for n, d in DEPLOYMENTS.items()
        if n.startswith("retrain-")
    }
    assert served[parameters["model"]] == parameters["input"]
    check_pool_and_schedule(deployment)


def test_the_demo_models_each_have_a_deployment_entering_the_workers_project():
    assert {f"retrain-{run}" for run in DEMO_RUNS} <= set(DEPLOYMENTS)
    (step,) = SPEC["pull"]
    assert step == {
        "kerasops.pipelines.flows.deploy.enter_project": {
            "directory": "{{ $KERASOPS_PROJECT_DIR }}"
        }
    }


def test_the_pull_step_enters_the_project_or_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="KERASOPS_PROJECT_DIR is not set"):
        enter_project("")
    with pytest.raises(ConfigError, match="holds no params.yaml"):
        enter_project(str(tmp_path))
    (tmp_path / "project").mkdir()
    write_params(tmp_path / "project")
    assert enter_project(str(tmp_path / "project")) == {"directory": str(tmp_path / "project")}
    assert Path.cwd() == tmp_path / "project"


# -- a real server and worker ------------------------------------------------------------------

PREFECT = [sys.executable, "-m", "prefect"]
GATE = {"test_accuracy": {"minimum": 0.5, "max_regression": 0.05}}


def prefect_env(home: Path, api: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="200")  # whole names
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if api:
        env["PREFECT_API_URL"] = api
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on loopback with its SQLite database; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = services.free_port()
    command = [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    command += ["--no-ui", "--analytics-off"]
    with services.server(command, f"{api}/health", home / "server.log", env=prefect_env(home)):
        yield api


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder as a user has it: params.yaml and the repository's prefect.yaml."""
    root = tmp_path_factory.mktemp("project")
    write_params(
        root,
        train={"epochs": 4, "batch_size": 64, "seed": 3},
        models={"transformer": {"preset": "transformer_tiny", "train": {"epochs": 1}}},
        retraining={"gate": GATE, "model_gates": {"rnn": {"test_mae": {"maximum": 100}}}},
    )
    shutil.copy(ROOT / "prefect.yaml", root / "prefect.yaml")
    return root


def cli(project: Path, server: str, *args: str) -> str:
    """A `prefect` command against the server; it must answer without a traceback."""
    done = subprocess.run(
        [*PREFECT, "--no-prompt", *args],
        cwd=project,
        env=prefect_env(project / ".prefect", server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, (args, output[-3000:])
    print(f"$ prefect {' '.join(args)}\n{done.stdout}")  # shown with -s
    return done.stdout


@pytest.fixture(scope="module")
def deployed(server, project):
    """The pool created, prefect.yaml's deployments registered, and a process worker polling
    the pool from another folder, entering the project through $KERASOPS_PROJECT_DIR."""
    cli(project, server, "work-pool", "create", "gpu-pool", "--type", "process")
    cli(project, server, "work-pool", "create", "cpu-pool", "--type", "process")  # monitoring
    assert "gpu-pool" in cli(project, server, "work-pool", "ls")
    cli(project, server, "deploy", "--all")
    listed = cli(project, server, "deployment", "ls")
    assert all(f"retrain-{run}" in listed for run in DEMO_RUNS)
    env = {**prefect_env(project / ".prefect", server), "KERASOPS_PROJECT_DIR": str(project)}
    log = project / "worker.log"
    with log.open("w") as handle:
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "gpu-pool", "--type", "process"],
            cwd=project.parent,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        services.stop_group(worker)


def run_deployment(project: Path, server: str, name: str, *params: str, timeout: float = 900):
    """`prefect deployment run` and wait for the flow run's end; return it."""
    from prefect.client.orchestration import get_client

    args = ["deployment", "run", f"retraining/{name}"]
    for param in params:
        args += ["-p", param]
    output = cli(project, server, *args)
    flow_run_id = output.split("/runs/flow-run/")[1].split()[0].strip("/")

    async def finished():
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                run = await client.read_flow_run(flow_run_id)
                if run.state and run.state.is_final():
                    return run
                await asyncio.sleep(2)
        raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout:.0f}s")

    return on_server(server, finished)


def cycle_outcomes(project: Path, name: str) -> list[str]:
    """The outcomes of the cycle runs of `name` in the project's MLflow store, oldest first."""
    from mlflow.tracking import MlflowClient

    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.tracking import store

    experiment = store.configure(load_params(project / "params.yaml"), retraining=True)
    runs = MlflowClient().search_runs(
        [experiment],
        f"tags.registered_model = '{name}' and tags.`kerasops.flow` = 'retraining'",
        order_by=["attributes.start_time ASC"],
    )
    return [r.data.tags["kerasops.outcome"] for r in runs]


@pytest.mark.integration
def test_the_cli_answers_and_a_scheduled_deployment_promotes_then_finds_no_new_data(
    server, project, deployed
):
    from mlflow.tracking import MlflowClient

    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.tracking import store

    started = time.monotonic()
    first = run_deployment(project, server, "retrain-cnn-digits", 'overrides=["epochs=3"]')
    assert first.state.is_completed(), (first.state, services.tail(project / "worker.log"))
    assert (project / "artifacts" / "serving" / "models" / "cnn-digits" / "1").is_dir()
    store.configure(load_params(project / "params.yaml"))
    champion = MlflowClient().get_model_version_by_alias("cnn-digits", "champion")
    assert str(champion.version) == "1"
    assert cycle_outcomes(project, "cnn-digits") == ["promoted"]
    artifact = read_artifact(server, "retraining-cnn-digits")
    assert artifact["flow_run_id"] == str(first.id) and "promoted" in artifact["data"]

    again = run_deployment(project, server, "retrain-cnn-digits", 'overrides=["epochs=3"]')
    assert again.state.is_completed()
    assert cycle_outcomes(project, "cnn-digits") == ["promoted", "no-new-data"]
    listed = cli(project, server, "flow-run", "ls")
    assert first.name in listed and again.name in listed
    print(f"two cnn-digits cycles through the worker: {time.monotonic() - started:.0f}s")


@pytest.mark.integration
@pytest.mark.parametrize("name", ["retrain-rnn-sunspots", "retrain-transformer-bbc_news"])
def test_the_other_demo_deployments_complete_a_cycle(server, project, deployed, name):
    quick = 'overrides=["epochs=1", "sequence_length=64", "max_tokens=2000"]'
    finished = run_deployment(project, server, name, quick if "transformer" in name else
                              'overrides=["epochs=1"]')  # fmt: skip
    assert finished.state.is_completed(), (finished.state, services.tail(project / "worker.log"))
    outcomes = cycle_outcomes(project, name.removeprefix("retrain-"))
    assert outcomes and outcomes[-1] in ("promoted", "rejected")


@pytest.mark.integration
@pytest.mark.parametrize(
    "param, message",
    [
        ("params_path=missing.yaml", "error: params file 'missing.yaml' not found"),
        ("model=resnet9000", "error: unknown model 'resnet9000'"),
    ],
)
def test_a_users_mistake_fails_the_run_with_one_line_and_the_worker_keeps_polling(
    server, project, deployed, param, message
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    failed = run_deployment(project, server, "retrain-cnn-digits", param)
    assert failed.state.is_failed() and not failed.state.is_crashed(), failed.state
    assert failed.state.message.startswith(message)

    async def logs():
        async with get_client() as client:
            found = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[failed.id]))
            )
        return [entry.message for entry in found]

    # the flow run's process ships its logs in batches (Prefect's APILogHandler), so they may
    # reach the server after the run's Failed state: read them until the error line is there
    deadline = time.monotonic() + 90
    while True:
        lines = on_server(server, logs)
        # the project's one line comes first; Prefect's engine then logs its own traceback of
        # any failed flow run (prefect/engine.py runs flows with return_type="result")
        errors = [line for line in lines if line.startswith("error:")]
        if errors or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert errors and errors[0].startswith(message), lines
    assert deployed.poll() is None, services.tail(project / "worker.log")


@pytest.mark.integration
def test_the_cron_schedule_is_visible_with_its_timezone(server, deployed):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name("retraining/retrain-cnn-digits")

    deployment = on_server(server, read)
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "UTC"
    assert schedule.active


def on_server(server: str, query):
    """Run the async client query `query()` against the test server from this process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server}):
        return asyncio.run(query())


def read_artifact(server: str, key: str) -> dict:
    import httpx

    response = httpx.get(f"{server}/artifacts/{key}/latest", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()
