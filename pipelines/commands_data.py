"""CLI commands of data versioning, validation, evaluation, lineage and the Prefect pipeline:
`kerasops data setup|add|verify`, `validate`, `evaluate`, `lineage`, `run-pipeline`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from models.config import KerasopsError


def load(args: argparse.Namespace):
    from pipelines.cli import load as load_params

    return load_params(args)


def cmd_data_setup(args: argparse.Namespace) -> int:
    from pipelines.versioning import setup_dvc

    for line in setup_dvc(load(args), remote=args.remote) or ["DVC already set up"]:
        print(line)
    return 0


def cmd_data_add(args: argparse.Namespace) -> int:
    from pipelines.versioning import add_dataset

    params = load(args)
    version, folder = add_dataset(params, Path(args.path), args.name, push=not args.no_push)
    relative = folder.relative_to(Path(params.root).resolve())
    print(f"dataset {args.name}: version {version} in {relative}")
    print(f"record it: git commit {relative}.dvc -m 'data: {args.name} version'")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from pipelines.steps import pipeline_config
    from pipelines.versioning import verify_data

    params = load(args)
    names = args.datasets or pipeline_config(params).datasets
    for line in verify_data(params, names):
        print(line)
    print("all data matches its recorded versions")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pipelines.steps import validate_dataset

    report = validate_dataset(load(args), args.dataset, keep=not args.no_keep)
    print(report.to_markdown())
    print(report.summary())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines.steps import evaluate_run

    metrics = evaluate_run(load(args), args.model, args.dataset)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from pipelines.lineage import describe_run

    print(describe_run(load(args), args.run_id))
    return 0


def local_prefect(params) -> None:
    """Prefect in local mode unless a server is configured: its database under artifacts/.

    Set before Prefect is imported, which reads its settings then. `PREFECT_HOME=artifacts/prefect
    prefect server start` shows these runs in the Prefect UI.
    """
    if "PREFECT_API_URL" not in os.environ:
        os.environ.setdefault("PREFECT_HOME", str(params.path("artifacts") / "prefect"))
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # its SQLite lives here
        os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def cmd_run_pipeline(args: argparse.Namespace) -> int:
    params = load(args)
    local_prefect(params)
    from pipelines.flows import run_pipeline

    try:
        result = run_pipeline(
            params,
            str(Path(args.params).resolve()),
            models=args.model or None,
            datasets=args.dataset or None,
            overrides=tuple(args.set or ()),
        )
    except RuntimeError as exc:
        if "Prefect API" not in str(exc):
            raise
        raise KerasopsError(
            f"{exc}; set PREFECT_API_URL to a running server, or raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        ) from None
    print(result.markdown)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="version datasets with DVC")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    setup = data_sub.add_parser("setup", help="dvc init, default local remote, track raw data")
    setup.add_argument("--remote", help="remote folder or URL (default: local cache folder)")
    setup.set_defaults(func=cmd_data_setup)
    add = data_sub.add_parser("add", help="version a file or folder as data/raw/NAME")
    add.add_argument("path")
    add.add_argument("--name", required=True, help="dataset name")
    add.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    add.set_defaults(func=cmd_data_add)
    verify = data_sub.add_parser("verify", help="check data against its DVC-recorded hashes")
    verify.add_argument("datasets", nargs="*", help="default: pipeline.datasets")
    verify.set_defaults(func=cmd_data_verify)

    validate = sub.add_parser("validate", help="validate prepared data against its reference")
    validate.add_argument("dataset")
    validate.add_argument(
        "--no-keep", action="store_true", help="do not keep this version as the next reference"
    )
    validate.set_defaults(func=cmd_validate)

    evaluate = sub.add_parser("evaluate", help="re-score a trained model on the test split")
    evaluate.add_argument("model")
    evaluate.add_argument("--dataset", required=True)
    evaluate.set_defaults(func=cmd_evaluate)

    lineage = sub.add_parser("lineage", help="print the code, params and data behind a run")
    lineage.add_argument("run_id")
    lineage.set_defaults(func=cmd_lineage)

    pipeline = sub.add_parser("run-pipeline", help="run the Prefect pipeline (params: pipeline)")
    pipeline.add_argument("--model", action="append", help="only these model families")
    pipeline.add_argument("--dataset", action="append", help="only these datasets")
    pipeline.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for all")
    pipeline.set_defaults(func=cmd_run_pipeline)
