"""The retraining flow: Prefect tasks wrapping `pipelines.retraining`, a flow that sequences
them, its schedule, and the `kerasops retrain | rollback | schedule` commands.

    detect data version -> (no new data: stop) -> validate -> train challenger -> register
    -> evaluate challenger and champion, gate -> infra-validate -> promote (publish + aliases)

Every cycle, whatever its outcome, is recorded as an MLflow run (`retrain-<name>`) and a Prefect
markdown artifact (`retraining-<name>`), with the wall time of each step.
"""

from __future__ import annotations

import argparse
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


def retraining_deployment(cron: str, **parameters: Any) -> Any:
    """The flow as a deployment with a cron schedule (apply it, or serve it)."""
    name = deployment_name(parameters["model"], parameters["dataset"])
    return retraining_flow.to_deployment(
        name=name, cron=check_cron(cron), parameters=schedule_parameters(**parameters)
    )


# -- CLI ------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """`kerasops retrain`, `kerasops rollback` and `kerasops schedule`."""
    retrain = subparsers.add_parser(
        "retrain", help="train a challenger and promote it if it beats the champion and serves"
    )
    _flow_arguments(retrain)
    retrain.set_defaults(func=cmd_retrain)

    back = subparsers.add_parser(
        "rollback", help="make the previous champion the champion again and serve it"
    )
    back.add_argument("model", help="registered model name, or a model family with --dataset")
    back.add_argument("--dataset", help="dataset (with a model family as MODEL)")
    back.set_defaults(func=cmd_rollback)

    schedule = subparsers.add_parser(
        "schedule", help="serve the retraining flow on a cron schedule (Prefect)"
    )
    _flow_arguments(schedule)
    schedule.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * *"')
    schedule.set_defaults(func=cmd_schedule)


def _flow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model family (see `kerasops list`)")
    parser.add_argument("--dataset", required=True, help="dataset name")
    parser.add_argument("--preset", help="preset of the model family")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a key"
    )
    parser.add_argument(
        "--force", action="store_true", help="run even when the data version is not new"
    )


def _check_inputs(args: argparse.Namespace) -> None:
    """Resolve the run config now, so a bad model, preset or key fails before Prefect starts."""
    from pipelines.settings import resolve_run_config

    resolve_run_config(load_params(args.params), args.model, args.dataset, args.preset, args.set)


def cmd_retrain(args: argparse.Namespace) -> int:
    _check_inputs(args)
    report = retraining_flow(
        args.model, args.dataset, args.preset, args.set, args.force, args.params
    )
    print(report.to_markdown())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipelines import tracking

    params = load_params(args.params)
    name = params.retraining.model_name(args.model, args.dataset) if args.dataset else args.model
    tracking.configure(params)
    result = rt.rollback(params, name)
    print(
        f"{name}: champion is version {result.champion} again (was {result.demoted}); "
        f"served as version {result.publication.served_version}"
    )
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    _check_inputs(args)
    parameters = schedule_parameters(
        args.model, args.dataset, args.preset, args.set, args.force, args.params
    )
    name = deployment_name(args.model, args.dataset)
    print(f"serving deployment {name} on cron {check_cron(args.cron)!r} (Ctrl-C stops)")
    retraining_flow.serve(name=name, cron=args.cron, parameters=parameters)
    return 0
