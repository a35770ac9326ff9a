"""The training and pipeline flows: each loads params.yaml and calls its plain sequence
(`kerasops.pipelines.steps.pipeline`) with a runner that makes every step a Prefect task.

- `training_flow(model, dataset, overrides, params_path)`: prepare (when needed) -> validate ->
  train -> report artifact.
- `pipeline_flow(params_path, models, datasets, overrides)`: check every run's config -> prepare
  -> validate -> train (up to `pipeline.max_parallel` at once) -> evaluate -> report artifact.

`run_pipeline_flow` runs the pipeline's trainings in the flow's own process when
`pipeline.max_parallel` is 1, and otherwise on a Dask cluster through Prefect's DaskTaskRunner,
as the tuning flow runs trials: a local cluster of `max_parallel` worker processes, or the
scheduler at `pipeline.scheduler`. Every other step runs in the flow's process.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from kerasops.pipelines.config import Params, load_params
from kerasops.pipelines.flows.cluster import dask_task_runner, share_temporary_server
from kerasops.pipelines.flows.failures import params_file, user_errors_fail
from kerasops.pipelines.flows.runner import PrefectRunner
from kerasops.pipelines.steps.pipeline import PipelineResult, run_pipeline, train_and_report
from kerasops.pipelines.steps.runner import step_name
from kerasops.pipelines.steps.train import TrainResult, train_model


@flow(name="training", log_prints=True)
def training_flow(
    model: str, dataset: str, overrides: Sequence[str] = (), params_path: str = "params.yaml"
) -> TrainResult:
    """Validate `dataset` (preparing it when needed), train `model` on it, publish the report."""

    def train() -> TrainResult:
        params = load_params(params_file(params_path))
        return train_and_report(params, model, dataset, tuple(overrides), PrefectRunner(params))

    return user_errors_fail(train)


@flow(name="pipeline", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def pipeline_flow(
    params_path: str = "params.yaml",
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> PipelineResult:
    """check configs -> prepare -> validate -> train -> evaluate -> report, for `pipeline.runs`."""

    def pipeline() -> PipelineResult:
        params = load_params(params_file(params_path))
        runner = PrefectRunner(params, fan_out={step_name(train_model)})  # trainings only
        return run_pipeline(params, models, datasets, tuple(overrides), runner)

    return user_errors_fail(pipeline)


def run_pipeline_flow(
    params_path: str,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> PipelineResult:
    """Run `pipeline_flow` with up to `pipeline.max_parallel` trainings at once, each in its own
    Dask worker process when that is more than one (or a scheduler is set)."""
    runner = pipeline_flow.with_options(task_runner=pipeline_task_runner(load_params(params_path)))
    return runner(params_path, models, datasets, overrides)


def pipeline_task_runner(params: Params) -> TaskRunner:
    """In-process for one training at a time; else the Dask cluster (its worker processes
    report to the flow's Prefect server, the temporary one in local mode)."""
    config = params.pipeline
    if config.max_parallel <= 1 and not config.scheduler:
        return ThreadPoolTaskRunner(max_workers=1)
    share_temporary_server()
    return dask_task_runner(config.scheduler, config.max_parallel)
