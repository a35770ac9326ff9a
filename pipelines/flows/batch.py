"""The batch-scoring flow and its schedule: the flow loads params.yaml and runs the one
predict-batch step as a Prefect task, its report a markdown artifact of the run;
`serve_batch_schedule` serves it on a cron schedule from one process (`flow.serve`), as
`kerasops schedule` serves the retraining flow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow

from kerasops.pipelines.config import load_params
from kerasops.pipelines.flows.failures import params_file, user_errors_fail
from kerasops.pipelines.flows.retraining import check_cron
from kerasops.pipelines.flows.runner import PrefectRunner
from kerasops.pipelines.steps.predict_batch import BatchJob, BatchReport, predict_batch


@flow(name="batch-scoring")
def batch_scoring_flow(
    model: str,
    input: str,  # noqa: A002 - the CLI's --input
    output: str,
    version: int | None = None,
    label: str | None = None,
    alias: str | None = None,
    signature: str | None = None,
    output_format: str | None = None,
    split: str = "all",
    key_column: str | None = None,
    batch_size: int = 256,
    skip_corrupt: bool = False,
    log_sampling: float = 1.0,
    log_rows: int = 64,
    params_path: str = "params.yaml",
) -> BatchReport:
    """Score `input` with a served version of `model` into `output` (see `predict_batch`). A
    user mistake fails the run with one line; an existing output stays as it was."""

    def score() -> BatchReport:
        params = load_params(params_file(params_path))
        job = BatchJob(
            model=model,
            input=input,
            output=output,
            version=version,
            label=label,
            alias=alias,
            signature=signature,
            format=output_format,
            split=split,
            key_column=key_column,
            batch_size=batch_size,
            skip_corrupt=skip_corrupt,
            log_sampling=log_sampling,
            log_rows=log_rows,
        )
        runner = PrefectRunner(params, retries=False)
        report = runner.run(predict_batch, params, job)
        runner.report(f"batch-{model}", report.to_markdown(), f"batch scoring with {model}")
        return report

    return user_errors_fail(score)


def flow_parameters(job: BatchJob, params_path: str) -> dict[str, Any]:
    """The flow's parameters for `job` (a deployment's `parameters`)."""
    values = dataclasses.asdict(job)
    values["output_format"] = values.pop("format")
    return {**values, "params_path": params_path}


def deployment_name(model: str) -> str:
    return f"score-{model}"


def serve_batch_schedule(name: str, cron: str, parameters: dict[str, Any]) -> None:
    """Serve the batch-scoring flow as deployment `name` on `cron`, in this process."""
    batch_scoring_flow.serve(name=name, cron=check_cron(cron), parameters=parameters)
