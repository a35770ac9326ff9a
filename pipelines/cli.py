"""The `kerasops` command line. Each command calls the one function that defines its step."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Each area adds its own subcommands: `add_commands(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "serving.cli",
    "pipelines.commands_data",
    "pipelines.commands_retraining",
)


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train import train_model

    result = train_model(
        load(args), args.model, args.dataset, preset=args.preset, overrides=args.set or ()
    )
    if result.chief:
        print(f"run {result.run_id} finished: {result.run_dir}")
    else:
        print("worker finished its share of the training; the chief records the run")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:28s} {value:.4f}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from data import prepare_dataset
    from data.catalog import resolve_dataset_config

    params = load(args)
    config = resolve_dataset_config(args.dataset, params.datasets)
    manifest = prepare_dataset(
        args.dataset, config, params.path("raw_data"), params.path("prepared_data")
    )
    counts = ", ".join(f"{k} {v}" for k, v in manifest.splits.items())
    print(f"prepared {manifest.name} ({manifest.kind}, {manifest.task}): {counts}")
    print(f"content hash {manifest.content_hash}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pipelines.compare import compare_runs, format_table

    rows = compare_runs(load(args), model=args.model, dataset=args.dataset, limit=args.limit)
    print(format_table(rows) if rows else "no runs recorded yet: run `kerasops train` first")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from pipelines import tracking

    params = load(args)
    uri = tracking.tracking_uri(params)
    command = [
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    if uri.startswith("sqlite:"):
        command += ["--default-artifact-root", tracking.artifact_root(params)]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri})", flush=True)
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.execvp(os.path.join(bin_dir, "mlflow"), command)


def cmd_list(args: argparse.Namespace) -> int:
    from data.catalog import BUILTIN_DATASETS
    from models import MODELS, PRESETS

    params = load(args)
    print("models:")
    for name, family in MODELS.items():
        presets = ", ".join(p for p, v in PRESETS.items() if v["model"] == name)
        print(f"  {name:12s} {family.description} (presets: {presets})")
    print("datasets:")
    for name in sorted({*BUILTIN_DATASETS, *params.datasets}):
        source = {**BUILTIN_DATASETS.get(name, {}), **(params.datasets.get(name) or {})}
        print(f"  {name:12s} source {source.get('source', '?')}")
    return 0


def load(args: argparse.Namespace):
    from pipelines.settings import load_params

    return load_params(args.params)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasops", description="Keras models from data to production."
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model on a dataset, tracked in MLflow")
    train.add_argument("model", help="model family (see `kerasops list`)")
    train.add_argument("--dataset", required=True, help="dataset name")
    train.add_argument("--preset", help="preset of the model family, e.g. cnn_small")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a model or train key"
    )
    train.set_defaults(func=cmd_train)

    prepare = sub.add_parser("prepare", help="prepare a dataset into data/prepared/NAME")
    prepare.add_argument("dataset")
    prepare.set_defaults(func=cmd_prepare)

    compare = sub.add_parser("compare", help="print tracked runs side by side")
    compare.add_argument("--model")
    compare.add_argument("--dataset")
    compare.add_argument("--limit", type=int, default=20)
    compare.set_defaults(func=cmd_compare)

    ui = sub.add_parser("ui", help="open the MLflow UI on the tracking store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)

    listing = sub.add_parser("list", help="list model families, presets and datasets")
    listing.set_defaults(func=cmd_list)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one `error:` line and exit with status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    from models.config import KerasopsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KerasopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
