"""`kerasops run-pipeline`, `retrain`, `rollback`, `monitor` and `schedule`. Each resolves its
configs before Prefect starts, so a bad model, preset or key fails at once; Prefect is imported only
after `local_prefect` chose where its local-mode database lives."""

from __future__ import annotations

import argparse
import os
import sys

from kerasops.pipelines.cli.common import add_overrides, params_of


def cmd_run_pipeline(args: argparse.Namespace) -> int:
    # deferred: the steps load TensorFlow and MLflow; Prefect reads its settings on import
    from kerasops.pipelines.flows.local import local_prefect
    from kerasops.pipelines.steps.pipeline import check_runs, select_runs

    params = params_of(args)
    check_runs(params, select_runs(params, args.model, args.dataset), args.set)
    local_prefect(params)
    # deferred: Prefect reads its settings when imported, after local_prefect
    from kerasops.pipelines.flows.local import start_temporary_server
    from kerasops.pipelines.flows.training import run_pipeline_flow

    start_temporary_server()
    result = run_pipeline_flow(
        os.path.abspath(args.params), args.model or None, args.dataset or None, args.set
    )
    print(result.markdown)
    return 0


def _resolve(args: argparse.Namespace) -> None:
    """Resolve the run config now, so a bad model, preset or key fails before Prefect starts;
    then set up Prefect's local mode (unless a server is configured)."""
    # deferred: the config loads TensorFlow; Prefect reads its settings on import
    # deferred: loads TensorFlow
    from kerasops.pipelines.config import resolve_run_config
    from kerasops.pipelines.flows.local import local_prefect
    from kerasops.pipelines.training.distribute import require_one_process

    params = params_of(args)
    run = resolve_run_config(params, args.model, args.dataset, args.preset, args.set)
    require_one_process(run.train)
    local_prefect(params)


def cmd_retrain(args: argparse.Namespace) -> int:
    _resolve(args)
    # deferred: Prefect reads its settings when imported, after local_prefect
    from kerasops.pipelines.flows.local import start_temporary_server
    from kerasops.pipelines.flows.retraining import retraining_flow

    start_temporary_server()
    params_path = os.path.abspath(args.params)
    report = retraining_flow(
        args.model, args.dataset, args.preset, args.set, args.force, params_path, args.fresh
    )
    print(report.to_markdown())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    # deferred: the steps load TensorFlow and MLflow
    from kerasops.pipelines.steps.rollback import rollback
    from kerasops.pipelines.tracking import store

    params = params_of(args)
    name = params.retraining.model_name(args.model, args.dataset) if args.dataset else args.model
    store.configure(params)
    result = rollback(params, name)
    print(
        f"{name}: champion is version {result.champion} again (was {result.demoted}); "
        f"served as version {result.publication.served_version}"
    )
    return 0


NO_VERDICT = 3  # `kerasops monitor`: too little logged traffic in the window to judge


def cmd_monitor(args: argparse.Namespace) -> int:
    # deferred: the step loads TensorFlow and MLflow
    from kerasops.pipelines.steps.monitor import TooLittleTraffic, compare_shadow, monitor_model

    if args.compare:
        champion, challenger = args.compare
        compared = compare_shadow(params_of(args), args.model, champion, challenger, args.since)
        print(compared.to_markdown())
        print(f"run {compared.run_id}; report artifacts/monitoring/{compared.model}-compare.md")
        return 0
    try:
        report = monitor_model(params_of(args), args.model, args.since, args.dataset)
    except TooLittleTraffic as exc:
        print(f"no verdict: {exc}", file=sys.stderr)
        return NO_VERDICT
    print(report.to_markdown())
    print(f"run {report.run_id}; report artifacts/monitoring/{report.model}.md")
    return 1 if report.drifted else 0  # 2 stays the exit of a mistake


def cmd_schedule(args: argparse.Namespace) -> int:
    _resolve(args)
    # deferred: Prefect
    from kerasops.pipelines.flows.retraining import (
        check_cron,
        deployment_name,
        schedule_parameters,
        serve_schedule,
    )

    cron = check_cron(args.cron)
    parameters = schedule_parameters(
        args.model,
        args.dataset,
        args.preset,
        args.set,
        args.force,
        os.path.abspath(args.params),
        args.fresh,
    )
    name = deployment_name(args.model, args.dataset)
    if args.monitor:
        return _serve_monitored(args, name, cron, parameters)
    print(f"serving deployment {name} on cron {cron!r} (Ctrl-C stops)", flush=True)
    serve_schedule(name, cron, parameters)
    return 0


def _serve_monitored(args: argparse.Namespace, name: str, cron: str, parameters: dict) -> int:
    """`schedule --monitor`: the retraining deployment, triggered by drift too, beside the
    served model's monitoring deployment."""
    # deferred: Prefect, after local_prefect
    from kerasops.pipelines.flows.monitoring import DRIFT, serve_monitored_schedule
    from kerasops.pipelines.flows.retraining import check_cron
    from kerasops.pipelines.steps.monitor import parse_since

    monitor_cron = check_cron(args.monitor)
    if args.monitor_since:
        parse_since(args.monitor_since)  # a bad window fails now, not in every run
    served = params_of(args).retraining.model_name(args.model, args.dataset)
    print(
        f"serving deployment {name} on cron {cron!r} and on {DRIFT} of {served}, and "
        f"monitor-{served} on cron {monitor_cron!r} (Ctrl-C stops)",
        flush=True,
    )
    serve_monitored_schedule(name, cron, parameters, served, monitor_cron, args.monitor_since)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    pipeline = sub.add_parser("run-pipeline", help="run the Prefect pipeline (params: pipeline)")
    pipeline.add_argument("--model", action="append", help="only these model families")
    pipeline.add_argument("--dataset", action="append", help="only these datasets")
    add_overrides(pipeline, "a key for every run")
    pipeline.set_defaults(func=cmd_run_pipeline)

    retrain = sub.add_parser(
        "retrain", help="train a challenger and promote it if it beats the champion and serves"
    )
    _flow_arguments(retrain)
    retrain.set_defaults(func=cmd_retrain)

    back = sub.add_parser(
        "rollback", help="make the previous champion the champion again and serve it"
    )
    back.add_argument("model", help="registered model name, or a model family with --dataset")
    back.add_argument("--dataset", help="dataset (with a model family as MODEL)")
    back.set_defaults(func=cmd_rollback)

    monitor = sub.add_parser(
        "monitor",
        help="compare a served model's logged traffic with its training data (exit 1: drift)",
    )
    monitor.add_argument("model", help="served model name (its models.config logging_config)")
    monitor.add_argument("--since", help="only logs of the last 30m, 24h, 7d, ... (default all)")
    monitor.add_argument("--dataset", help="training dataset (default: the version's own)")
    monitor.add_argument(
        "--compare",
        nargs=2,
        metavar=("CHAMPION", "CHALLENGER"),
        help="instead: pair the shadow traffic of two versions (labels or numbers) on the same "
        "live inputs: agreement / mean absolute difference and latency of each",
    )
    monitor.set_defaults(func=cmd_monitor)

    schedule = sub.add_parser(
        "schedule", help="serve the retraining flow on a cron schedule (Prefect)"
    )
    _flow_arguments(schedule)
    schedule.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * *"')
    schedule.add_argument(
        "--monitor",
        metavar="CRON",
        help="also monitor the served model on this cron; its drift event starts a cycle",
    )
    schedule.add_argument(
        "--monitor-since", default="1h", help="the logged window each check reads (default 1h)"
    )
    schedule.set_defaults(func=cmd_schedule)


def _flow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model family (see `kerasops list`)")
    parser.add_argument("--dataset", required=True, help="dataset name")
    parser.add_argument("--preset", help="preset of the model family")
    add_overrides(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="run even when a cycle already decided on this data version (a training run with "
        "the same data and config is reused: add --fresh to train a new challenger)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="train a new challenger even when a run with the same data and config exists",
    )
