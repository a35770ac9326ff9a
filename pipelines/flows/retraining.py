"""The retraining flow and its schedule. The flow loads params.yaml, resolves the run config
once and calls the plain cycle (`kerasops.pipelines.steps.retrain.retrain`) with a runner that
makes every step a Prefect task; `serve_schedule` serves it on a cron schedule (`flow.serve`),
and `prefect.yaml` declares the same flow as a deployment for a Prefect server's workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow
from prefect.client.schemas.schedules import CronSchedule

from kerasops.errors import ConfigError
from kerasops.pipelines.config import load_params, resolve_run_config
from kerasops.pipelines.flows.failures import params_file, user_errors_fail
from kerasops.pipelines.flows.runner import PrefectRunner
from kerasops.pipelines.retraining.report import CycleReport
from kerasops.pipelines.steps.retrain import retrain


@flow(name="retraining")
def retraining_flow(
    model: str,
    dataset: str,
    preset: str | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    params_path: str = "params.yaml",
    fresh: bool = False,
) -> CycleReport:
    """One champion/challenger cycle; safe to retry at any point. A user mistake (a missing
    params file, an unknown model or key, failed validation) fails the run with one line."""

    def cycle() -> CycleReport:
        params = load_params(params_file(params_path))
        run = resolve_run_config(params, model, dataset, preset, list(overrides or []))
        return retrain(params, run, force, fresh, PrefectRunner(params, retries=False))

    return user_errors_fail(cycle)


def deployment_name(model: str, dataset: str) -> str:
    return f"retrain-{model}-{dataset}"


def check_cron(cron: str) -> str:
    """Return `cron` if it is a valid cron expression, else raise ConfigError."""
    try:
        CronSchedule(cron=cron)
    except ValueError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ConfigError(f"--cron {cron!r} is not a valid cron expression ({reason})") from None
    return cron


def schedule_parameters(
    model: str,
    dataset: str,
    preset: str | None,
    overrides: Sequence[str],
    force: bool,
    params_path: str,
    fresh: bool = False,
) -> dict[str, Any]:
    return {
        "model": model,
        "dataset": dataset,
        "preset": preset,
        "overrides": list(overrides),
        "force": force,
        "params_path": params_path,
        "fresh": fresh,
    }


def serve_schedule(name: str, cron: str, parameters: dict[str, Any]) -> None:
    """Serve the retraining flow as deployment `name` on `cron`, in this process (Ctrl-C stops)."""
    retraining_flow.serve(name=name, cron=check_cron(cron), parameters=parameters)
