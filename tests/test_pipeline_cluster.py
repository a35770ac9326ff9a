"""`run-pipeline`'s trainings: in the flow's process for `pipeline.max_parallel: 1`, on a local
Dask cluster of worker processes (Prefect's DaskTaskRunner) above it or with a scheduler."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from kerasops.errors import ConfigError
from kerasops.pipelines.config import load_params
from kerasops.pipelines.flows.training import pipeline_task_runner
from kerasops.pipelines.steps.train import PROCESS_TAG
from kerasops.pipelines.tracking import store as tracking
from tests.conftest import write_params

pytestmark = pytest.mark.serial  # timed against other processes: run alone (Makefile)

RUNS = {
    "mlp-digits": {"model": "mlp", "dataset": "digits"},
    "cnn-digits": {"model": "cnn", "dataset": "digits"},
}


def pipeline_section(**values) -> dict:
    return {"datasets": ["digits"], "runs": RUNS, "fine_tunes": {}, "retries": 0, **values}


def test_one_training_at_a_time_stays_in_process_more_go_to_dask(project, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no temporary server
    write_params(project, pipeline=pipeline_section())
    assert isinstance(pipeline_task_runner(load_params("params.yaml")), ThreadPoolTaskRunner)
    write_params(project, pipeline=pipeline_section(max_parallel=2))
    local = pipeline_task_runner(load_params("params.yaml"))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["threads_per_worker"] == 1
    threads = str(max((os.cpu_count() or 1) // 2, 1))
    assert local.cluster_kwargs["env"]["TF_NUM_INTRAOP_THREADS"] == threads
    write_params(project, pipeline=pipeline_section(scheduler="tcp://127.0.0.1:8786"))
    remote = pipeline_task_runner(load_params("params.yaml"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"


def test_a_wrong_scheduler_type_names_the_key(project):
    write_params(project, pipeline=pipeline_section(scheduler=8786))
    with pytest.raises(ConfigError, match="scheduler"):
        load_params("params.yaml")


@pytest.mark.slow
@pytest.mark.integration
def test_two_trainings_run_in_two_dask_worker_processes(project):
    """`max_parallel: 2`: each training in its own worker process of a local Dask cluster,
    neither in the `kerasops run-pipeline` process; both recorded and reported."""
    write_params(project, pipeline=pipeline_section(max_parallel=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    command = [sys.executable, "-m", "kerasops", "run-pipeline", "--set", "epochs=1"]
    with subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        stdout, stderr = process.communicate(timeout=500)
    assert process.returncode == 0, stderr[-3000:]
    assert "| mlp | digits |" in stdout and "| cnn | digits |" in stdout
    tracking.configure(load_params(project / "params.yaml"))
    experiment = mlflow.get_experiment_by_name("tests")
    runs = MlflowClient().search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == ["cnn", "mlp"]
    processes = {r.data.tags[PROCESS_TAG] for r in runs}
    assert len(processes) == 2
    assert not any(p.endswith(f":{process.pid}") for p in processes)
    assert all(r.data.tags.get("prefect.flow_run_id") for r in runs)
