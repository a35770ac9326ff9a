"""`kerasops train`, `evaluate`, `compare`, `lineage`, `list` and `ui`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kerasops.errors import ConfigError
from kerasops.pipelines.cli.common import add_overrides, params_of


def cmd_train(args: argparse.Namespace) -> int:
    # deferred: the train step loads TensorFlow and MLflow
    from kerasops.pipelines.config import resolve_run_config
    from kerasops.pipelines.steps.train import train_model

    params = params_of(args)
    run = resolve_run_config(params, args.model, args.dataset, args.preset, args.set)
    result = train_model(params, run)
    if result.chief:
        print(f"run {result.run_id} finished: {result.run_dir}")
    else:
        print("worker finished its share of the training; the chief records the run")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:28s} {value:.4f}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    # deferred: the tune step loads TensorFlow, MLflow and Optuna
    from kerasops.pipelines.steps.tune import (
        config_study_name,
        prepare_study,
        summary,
        tune_model,
    )

    params = params_of(args)
    if args.trials is not None and args.trials < 1:
        raise ConfigError("--trials must be >= 1")
    if args.parallel < 1:
        raise ConfigError("--parallel must be >= 1")
    if args.study_per_config:
        if args.study:
            raise ConfigError("--study and --study-per-config name the study both; pass one")
        args.study = config_study_name(params, args.model, args.dataset, args.set)
    prepare_study(params, args.model, args.dataset, args.study, args.set)  # before any work
    if args.parallel == 1:
        result = tune_model(params, args.model, args.dataset, args.trials, 1, args.study, args.set)
    else:
        from kerasops.pipelines.flows.local import local_prefect  # deferred: loads Prefect

        local_prefect(params)
        # deferred: Prefect reads its settings when imported, after local_prefect
        from kerasops.pipelines.flows.tuning import run_tuning_flow

        result = run_tuning_flow(
            os.path.abspath(args.params),
            args.model,
            args.dataset,
            args.trials,
            args.parallel,
            args.study,
            args.set,
        )
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary(result), indent=2, sort_keys=True) + "\n")
    states = ", ".join(f"{n.lower()} {c}" for n, c in result.states.items() if c)
    print(f"study {result.study} (MLflow parent run {result.parent_run_id}): {states}")
    if result.best_trial is None:
        print("no trial completed")
        return 1
    print(f"best trial {result.best_trial}: {result.objective} = {result.best_value:.4f}")
    for key, value in result.best_values.items():
        print(f"  {key} = {value!r}")
    if args.apply:
        from kerasops.pipelines.config.edit import write_model_values  # deferred: ruamel

        write_model_values(Path(args.params), args.model, result.best_values)
        print(f"wrote the best values into {args.params} models.{args.model}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kerasops.pipelines.steps.evaluate import evaluate_run  # deferred: loads TensorFlow

    metrics = evaluate_run(params_of(args), args.model, args.dataset)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from kerasops.pipelines.tracking.runs import compare_runs, format_table  # deferred: MLflow

    rows = compare_runs(params_of(args), model=args.model, dataset=args.dataset, limit=args.limit)
    print(format_table(rows) if rows else "no runs recorded yet: run `kerasops train` first")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from kerasops.pipelines.tracking.runs import describe_run  # deferred: loads MLflow

    print(describe_run(params_of(args), args.run_id))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    # deferred: the model registry loads TensorFlow
    from kerasops.data import BUILTIN_DATASETS
    from kerasops.models import MODELS

    params = params_of(args)
    models = [
        (name, family.description, ", ".join(family.presets)) for name, family in MODELS.items()
    ]
    datasets = [
        (
            name,
            params.dataset(name).source,
            "params.yaml" if name in params.datasets else "built in",
        )
        for name in sorted({*BUILTIN_DATASETS, *params.datasets})
    ]
    print("models:")
    print(columns([("family", "what", "presets"), *models]))
    print("datasets:")
    print(columns([("dataset", "source", "declared in"), *datasets]))
    return 0


def columns(rows: list[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns as wide as their longest cell, indented by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_ui(args: argparse.Namespace) -> int:
    from kerasops.pipelines.tracking import store  # deferred: loads MLflow

    params = params_of(args)
    uri = store.tracking_uri(params)
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host]
    command += ["--port", str(args.port)]
    if uri.startswith("sqlite:"):
        command += ["--default-artifact-root", store.artifact_root(params)]
    url = f"http://{args.host}:{args.port}"
    store.record_ui(params, url)  # reports link runs to this UI while it runs
    print(f"MLflow UI on {url} (store {uri})", flush=True)
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.execvp(os.path.join(bin_dir, "mlflow"), command)


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model on a dataset, tracked in MLflow")
    train.add_argument("model", help="model family (see `kerasops list`)")
    train.add_argument("--dataset", required=True, help="dataset name")
    train.add_argument("--preset", help="preset of the model family, e.g. cnn_small")
    add_overrides(train)
    train.set_defaults(func=cmd_train)

    tune = sub.add_parser("tune", help="search hyperparameters (tuning.<family>.space) with Optuna")
    tune.add_argument("model", help="model family with a tuning.<family> section")
    tune.add_argument("--dataset", required=True, help="dataset name")
    tune.add_argument("--trials", type=int, help="trials the study holds (default: its section's)")
    tune.add_argument(
        "--parallel", type=int, default=1, help="trial processes at once, on Dask (default 1)"
    )
    tune.add_argument("--study", help="study name (default MODEL-DATASET); rerun to resume it")
    tune.add_argument(
        "--study-per-config",
        action="store_true",
        help="name the study MODEL-DATASET-HASH of the space and base config (a DVC stage's)",
    )
    tune.add_argument("--summary", type=Path, help="write the study's outcome as JSON here")
    tune.add_argument(
        "--apply", action="store_true", help="write the best values into params.yaml models.MODEL"
    )
    add_overrides(tune, "a model or train key of every trial (e.g. epochs=5)")
    tune.set_defaults(func=cmd_tune)

    evaluate = sub.add_parser("evaluate", help="re-score a trained model on the test split")
    evaluate.add_argument("model", help="model family of the trained run")
    evaluate.add_argument("--dataset", required=True, help="dataset it was trained on")
    evaluate.set_defaults(func=cmd_evaluate)

    compare = sub.add_parser("compare", help="print tracked runs side by side")
    compare.add_argument("--model", help="only runs of this model family")
    compare.add_argument("--dataset", help="only runs on this dataset")
    compare.add_argument("--limit", type=int, default=20, help="newest runs shown (default 20)")
    compare.set_defaults(func=cmd_compare)

    lineage = sub.add_parser("lineage", help="print the code, params and data behind a run")
    lineage.add_argument("run_id", help="MLflow run id, or a unique prefix (as compare shows)")
    lineage.set_defaults(func=cmd_lineage)

    listing = sub.add_parser("list", help="list model families, presets and datasets")
    listing.set_defaults(func=cmd_list)

    ui = sub.add_parser("ui", help="open the MLflow UI on the tracking store")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.set_defaults(func=cmd_ui, needs_tensorflow=False)
