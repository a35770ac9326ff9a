"""The retraining flow: Prefect tasks wrapping `pipelines.retraining`, a flow that sequences
them, and its schedule (the commands are in `pipelines.commands_retraining`).

    detect data version -> (no new data: stop) -> validate -> train challenger -> register
    -> evaluate challenger and champion, gate -> infra-validate -> promote (publish + aliases)

Every cycle, whatever its outcome, is recorded as an MLflow run (`retrain-<name>`) and a Prefect
markdown artifact (`retraining-<name>`), with the wall time of each step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from models.config import ConfigError
from pipelines import retraining as rt
from pipelines.settings import load_params

TASK: dict[str, Any] = {"cache_policy": NO_CACHE}


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


@task(name="start-cycle", **TASK)
def start_task(params_path: str, model: str, dataset: str) -> rt.CycleReport:
    return rt.start_cycle(load_params(params_path), model, dataset)


@task(name="detect-data-version", **TASK)
def detect_task(params_path: str, name: str, dataset: str) -> tuple[str, bool]:
    version = rt.detect_data_version(load_params(params_path), dataset)
    return version, rt.has_new_data(name, version)


@task(name="validate-data", **TASK)
def validate_task(params_path: str, dataset: str) -> Any:
    return rt.validate_data(load_params(params_path), dataset)


@task(name="train-challenger", **TASK)
def train_task(
    params_path: str,
    name: str,
    model: str,
    dataset: str,
    data_version: str,
    preset: str | None,
    overrides: Sequence[str],
) -> rt.Challenger:
    params = load_params(params_path)
    tags = {"prefect.flow_run_id": _flow_run_id()}
    run_id, trained = rt.train_challenger(
        params, model, dataset, data_version, preset, overrides, tags
    )
    hash_ = rt.params_hash(params, model, dataset, preset, overrides)
    challenger = rt.register_challenger(name, run_id, data_version, hash_)
    return rt.dataclasses.replace(challenger, trained=trained)


@task(name="evaluate-and-gate", **TASK)
def evaluate_task(
    params_path: str, dataset: str, challenger: rt.Challenger, champion: str | None
) -> rt.GateDecision:
    return rt.evaluate_and_gate(load_params(params_path), dataset, challenger, champion)


@task(name="infra-validate", **TASK)
def infra_task(params_path: str, dataset: str, challenger: rt.Challenger) -> rt.InfraReport:
    return rt.stage_and_validate(load_params(params_path), dataset, challenger)


@task(name="promote", **TASK)
def promote_task(params_path: str, challenger: rt.Challenger, staged: str) -> rt.Publication:
    params = load_params(params_path)
    return rt.promote(params, challenger, rt.Path(staged), params.retraining)


@task(name="reject", **TASK)
def reject_task(challenger: rt.Challenger, verdict: str) -> None:
    rt.record_verdict(challenger, verdict)


@task(name="record-cycle", **TASK)
def record_task(params_path: str, report: rt.CycleReport) -> str:
    from prefect.artifacts import create_markdown_artifact

    run_id = rt.record_cycle(load_params(params_path), report, _flow_run_id())
    create_markdown_artifact(
        key=artifact_key(report.name),
        markdown=report.to_markdown(),
        description=f"retraining {report.name}: {report.outcome}",
    )
    return run_id


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "retraining-" + re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


@flow(name="retraining")
def retraining_flow(
    model: str,
    dataset: str,
    preset: str | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    params_path: str = "params.yaml",
) -> rt.CycleReport:
    """One champion/challenger cycle; safe to retry at any point."""
    overrides = list(overrides or [])
    report = start_task(params_path, model, dataset)
    try:
        with report.step("detect"):
            report.data_version, new_data = detect_task(params_path, report.name, dataset)
        if not (new_data or force):
            report.outcome = "no-new-data"
            return report
        with report.step("validate"):
            validate_task(params_path, dataset)
        with report.step("train"):
            report.challenger = train_task(
                params_path, report.name, model, dataset, report.data_version, preset, overrides
            )
        if report.challenger.version == report.champion_before:
            report.outcome = "already-champion"
            return report
        with report.step("evaluate"):
            report.decision = evaluate_task(
                params_path, dataset, report.challenger, report.champion_before
            )
        if not report.decision.passed:
            reject_task(report.challenger, "rejected")
            report.outcome = "rejected"
            return report
        with report.step("infra_validate"):
            report.infra = infra_task(params_path, dataset, report.challenger)
        if not report.infra.passed:
            reject_task(report.challenger, "infra_failed")
            report.outcome = "infra-failed"
            return report
        with report.step("promote"):
            report.publication = promote_task(params_path, report.challenger, report.infra.staged)
        report.outcome = "promoted"
        return report
    finally:
        record_task(params_path, report)


# -- scheduling ---------------------------------------------------------------------------------


def deployment_name(model: str, dataset: str) -> str:
    return f"retrain-{model}-{dataset}"


def check_cron(cron: str) -> str:
    """Return `cron` if it is a valid cron expression, else raise ConfigError."""
    from prefect.client.schemas.schedules import CronSchedule

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
) -> dict[str, Any]:
    return {
        "model": model,
        "dataset": dataset,
        "preset": preset,
        "overrides": list(overrides),
        "force": force,
        "params_path": params_path,
    }
