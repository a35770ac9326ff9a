"""`kerasops retrain`, `kerasops rollback` and `kerasops schedule`. Prefect is imported only when
a command runs, after `local_prefect` chose where its local-mode database lives."""

from __future__ import annotations

import argparse
import os

from pipelines.settings import load_params


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the retrain, rollback and schedule subcommands."""
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


def _prepare(args: argparse.Namespace) -> None:
    """Resolve the run config now, so a bad model, preset or key fails before Prefect starts;
    then set up Prefect's local mode (unless a server is configured)."""
    from pipelines.commands_data import local_prefect
    from pipelines.settings import resolve_run_config

    params = load_params(args.params)
    resolve_run_config(params, args.model, args.dataset, args.preset, args.set)
    local_prefect(params)
    # the temporary local server needs longer than Prefect's 20 s on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def cmd_retrain(args: argparse.Namespace) -> int:
    _prepare(args)
    from pipelines.retraining_flow import retraining_flow

    params_path = os.path.abspath(args.params)
    report = retraining_flow(
        args.model, args.dataset, args.preset, args.set, args.force, params_path
    )
    print(report.to_markdown())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipelines import retraining, tracking

    params = load_params(args.params)
    name = params.retraining.model_name(args.model, args.dataset) if args.dataset else args.model
    tracking.configure(params)
    result = retraining.rollback(params, name)
    print(
        f"{name}: champion is version {result.champion} again (was {result.demoted}); "
        f"served as version {result.publication.served_version}"
    )
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    _prepare(args)
    from pipelines.retraining_flow import (
        check_cron,
        deployment_name,
        retraining_flow,
        schedule_parameters,
    )

    cron = check_cron(args.cron)
    parameters = schedule_parameters(
        args.model, args.dataset, args.preset, args.set, args.force, os.path.abspath(args.params)
    )
    name = deployment_name(args.model, args.dataset)
    print(f"serving deployment {name} on cron {cron!r} (Ctrl-C stops)", flush=True)
    retraining_flow.serve(name=name, cron=cron, parameters=parameters)
    return 0
