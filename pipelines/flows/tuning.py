"""The tuning flow: `tune_model` with a runner whose tasks (each a worker running trials of the
study) go to a Dask cluster through Prefect's DaskTaskRunner: a local cluster of `parallel`
worker processes by default, the scheduler at `tuning.scheduler` when one is set."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import flow

from kerasops.pipelines.config import load_params
from kerasops.pipelines.flows.cluster import dask_task_runner, share_temporary_server
from kerasops.pipelines.flows.failures import params_file, user_errors_fail
from kerasops.pipelines.flows.runner import PrefectRunner
from kerasops.pipelines.steps.tune import TuneResult, tune_model


@flow(name="tuning", log_prints=True)
def tuning_flow(
    model: str,
    dataset: str,
    trials: int | None = None,
    parallel: int = 2,
    study: str | None = None,
    overrides: Sequence[str] = (),
    params_path: str = "params.yaml",
) -> TuneResult:
    """Run or resume the study, its trials spread over the flow's task runner's workers."""

    def tune() -> TuneResult:
        params = load_params(params_file(params_path))
        runner = PrefectRunner(params, retries=False)
        return tune_model(params, model, dataset, trials, parallel, study, overrides, runner)

    return user_errors_fail(tune)


def run_tuning_flow(
    params_path: str,
    model: str,
    dataset: str,
    trials: int | None = None,
    parallel: int = 2,
    study: str | None = None,
    overrides: Sequence[str] = (),
) -> TuneResult:
    """`tuning_flow` on Dask; worker processes report to the Prefect server the flow uses."""
    params = load_params(params_path)
    share_temporary_server()
    runner = dask_task_runner(params.tuning.scheduler, parallel)
    flow_with_dask = tuning_flow.with_options(task_runner=runner)
    return flow_with_dask(model, dataset, trials, parallel, study, list(overrides), params_path)
