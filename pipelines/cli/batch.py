"""`kerasops predict-batch`: score a dataset, an image folder or a CSV with a served model, into
a CSV or Parquet file; with `--cron`, serve the same job as a scheduled Prefect flow."""

from __future__ import annotations

import argparse
import os
import sys

from kerasops.pipelines.cli.common import params_of


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict-batch",
        help="score a prepared dataset, an image folder or a CSV with a served model (batch)",
        description=(
            "Loads the served model's SavedModel from the serving repository and scores INPUT "
            "in bounded batches: a prepared dataset (its name or folder; key: shard:record), "
            "an image folder, class folders or flat (key: the file's path), or a CSV with a "
            "header (key: row number or --key-column; feature columns by the names the "
            "served version records, else every other column in order). Writes one row per "
            "example (key, class id, class and probabilities, or the output values) to OUTPUT, "
            "replaced only when the whole run succeeds, and logs the requests as the server does."
        ),
    )
    parser.add_argument("model", help="served model name (models.config / serving repository)")
    parser.add_argument("--input", required=True, help="dataset name or folder, image folder, CSV")
    parser.add_argument("--output", required=True, help="predictions file (.csv or .parquet)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="served version")
    choice.add_argument("--label", help="version label of models.config (stable, canary, ...)")
    choice.add_argument(
        "--alias", help="MLflow registry alias, e.g. champion: the served version holding it"
    )
    parser.add_argument("--signature", help="signature name (default serving_default)")
    parser.add_argument(
        "--format", choices=["csv", "parquet"], help="output format (default: by suffix)"
    )
    parser.add_argument(
        "--split", default="all", help="a prepared dataset's split: train, val, test or all (all)"
    )
    parser.add_argument("--key-column", help="a CSV's column that names each row")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per batch (256)")
    parser.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave unreadable images out (each named in a warning, counted) instead of failing",
    )
    parser.add_argument(
        "--log-sampling",
        type=float,
        default=1.0,
        help="share of requests written to the prediction log (1.0; 0 turns it off)",
    )
    parser.add_argument(
        "--log-rows", type=int, default=64, help="rows per prediction log record (64)"
    )
    parser.add_argument(
        "--cron", help='serve this job as a Prefect deployment on a cron schedule ("0 4 * * *")'
    )
    parser.set_defaults(func=cmd_predict_batch)


def job_of(args: argparse.Namespace):  # noqa: ANN201 - the step module loads TensorFlow
    # deferred: the step loads TensorFlow
    from kerasops.pipelines.steps.predict_batch import BatchJob

    job = BatchJob(
        model=args.model,
        input=args.input,
        output=args.output,
        version=args.version,
        label=args.label,
        alias=args.alias,
        signature=args.signature,
        format=args.format,
        split=args.split,
        key_column=args.key_column,
        batch_size=args.batch_size,
        skip_corrupt=args.skip_corrupt,
        log_sampling=args.log_sampling,
        log_rows=args.log_rows,
    )
    job.check()
    return job


def cmd_predict_batch(args: argparse.Namespace) -> int:
    if args.cron:
        return _serve_schedule(args)
    # deferred: the step loads TensorFlow
    from kerasops.pipelines.steps.predict_batch import predict_batch

    report = predict_batch(params_of(args), job_of(args))
    for key, why in report.skipped:
        print(f"warning: skipped {key}: {why}", file=sys.stderr)
    skipped = f"; {len(report.skipped)} unreadable inputs skipped" if report.skipped else ""
    print(
        f"scored {report.rows} rows of {report.input} with {report.model} version "
        f"{report.version} in {report.seconds:.1f} s ({report.rows_per_second:.0f} rows/s) "
        f"-> {report.output}{skipped}"
    )
    if report.column_rule:
        print(f"CSV columns: {report.column_rule}")
    if report.log_dir:
        dropped = f" ({report.log_dropped} dropped)" if report.log_dropped else ""
        print(f"{report.log_records} prediction log records under {report.log_dir}{dropped}")
    return 0


def _serve_schedule(args: argparse.Namespace) -> int:
    # deferred: Prefect reads its settings on import, after local_prefect
    from kerasops.pipelines.flows.local import local_prefect

    params = params_of(args)
    job = job_of(args)
    local_prefect(params)
    # deferred: Prefect
    from kerasops.pipelines.flows.batch import (
        check_cron,
        deployment_name,
        flow_parameters,
        serve_batch_schedule,
    )

    cron = check_cron(args.cron)
    name = deployment_name(args.model)
    print(f"serving deployment {name} on cron {cron!r} (Ctrl-C stops)", flush=True)
    serve_batch_schedule(name, cron, flow_parameters(job, os.path.abspath(args.params)))
    return 0
