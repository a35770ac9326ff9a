"""`kerasops export`, `kerasops serve` and `kerasops predict`, added to the main CLI by
`add_commands(subparsers)`. Each command function takes the parsed args and returns an exit code;
user mistakes raise KerasopsError subclasses, which the main CLI prints as one line."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.config import ConfigError, KerasopsError
from serving.config import ServingConfig, load_serving_config


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the export, serve and predict subcommands."""
    _add_export(subparsers)
    _add_serve(subparsers)
    _add_predict(subparsers)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model as a SavedModel version in the TF Serving repository",
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="training output folder (model.keras + config.json) or a .keras file",
    )
    parser.add_argument("--run-id", help="MLflow run whose `model` artifact to export")
    parser.add_argument(
        "--model-uri", help="MLflow model URI: models:/<name>/<version>, models:/<name>@<alias>"
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: local SQLite store)")
    parser.add_argument("--name", help="served model name (default: <model>-<dataset>)")
    parser.add_argument("--version", type=int, help="version number (default: latest + 1)")
    parser.add_argument(
        "--label", action="append", default=[], help="version label to point here (repeatable)"
    )
    parser.add_argument("--model-repository", help="TF Serving model repository folder")
    parser.add_argument("--models-config", help="models.config file to create or update")
    parser.add_argument(
        "--prepared-root", default="data/prepared", help="prepared datasets, for warmup examples"
    )
    parser.set_defaults(func=export_command)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the model repository over TF Serving's REST and gRPC APIs"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--models-config", help="models.config (model_config_list) to serve")
    source.add_argument("--model-repository", help="serve every model folder of a repository")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--rest-port", type=int, help="REST port (default 8501)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8500)")
    parser.set_defaults(func=serve_command)


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="call a served model with inputs from a file")
    parser.add_argument("model", help="served model name")
    parser.add_argument(
        "--input",
        required=True,
        help=".npy array, or .json: a list of examples or a TF Serving request body",
    )
    parser.add_argument("--grpc", action="store_true", help="call over gRPC instead of REST")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="model version")
    choice.add_argument("--label", help="version label")
    parser.add_argument("--signature", help="signature name (default serving_default)")
    parser.add_argument("--url", help="REST URL or gRPC host:port (default: local server)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.set_defaults(func=predict_command)


def _config(args: argparse.Namespace, **overrides: Any) -> ServingConfig:
    config = load_serving_config(getattr(args, "params", "params.yaml"))
    changes = {key: value for key, value in overrides.items() if value is not None}
    return config.replace(**changes) if changes else config


def export_command(args: argparse.Namespace) -> int:
    from serving.export import export_saved_model
    from serving.sources import dataset_examples, load_from_folder, load_from_mlflow

    chosen = [x for x in (args.model, args.run_id, args.model_uri) if x]
    if len(chosen) != 1:
        raise ConfigError("export: give exactly one of MODEL (folder), --run-id or --model-uri")
    config = _config(args, model_repository=args.model_repository, models_config=args.models_config)
    if args.model:
        source = load_from_folder(Path(args.model))
    else:
        uri = args.model_uri or f"runs:/{args.run_id}/model"
        source = load_from_mlflow(uri, args.tracking_uri)
    examples, classes = dataset_examples(
        source.run_config, args.prepared_root, config.num_warmup_records
    )
    result = export_saved_model(
        source.model,
        args.name or source.default_name(),
        config=config,
        version=args.version,
        warmup_examples=examples,
        class_names=_class_names(source.model, classes),
        labels=args.label,
        info={**source.info, "run_config": source.run_config},
    )
    print(
        f"exported {result.model_name} version {result.version} to {result.path} "
        f"(signatures: {', '.join(result.signatures)}; {result.warmup_records} warmup requests)"
    )
    return 0


def _class_names(model: Any, classes: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The dataset's class names when they match the model's output width."""
    width = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    return classes if classes and len(classes) == width else None


def serve_command(args: argparse.Namespace) -> int:
    from serving.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = _config(args, host=args.host, rest_port=args.rest_port, grpc_port=args.grpc_port)
    serve(config, args.models_config, args.model_repository)
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from serving.client import connect

    inputs = read_inputs(Path(args.input))
    with connect(args.url, grpc=args.grpc, timeout=args.timeout) as client:
        outputs = client.predict(
            args.model,
            inputs,
            version=args.version,
            label=args.label,
            signature_name=args.signature,
        )
    print(json.dumps({key: _jsonable(value) for key, value in outputs.items()}))
    return 0


def read_inputs(path: Path) -> Any:
    """A batch from .npy, or from .json (a list of examples, or `instances`/`inputs`)."""
    if not path.is_file():
        raise KerasopsError(f"input file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix != ".json":
        raise KerasopsError(f"unsupported input file {path.name}: use .npy or .json")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KerasopsError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(document, dict) and "inputs" in document:
        document = document["inputs"]
    elif isinstance(document, dict) and "instances" in document:
        document = document["instances"]
    if isinstance(document, dict):
        return {key: np.asarray(value) for key, value in document.items()}
    return np.asarray(document)


def _jsonable(value: np.ndarray) -> Any:
    if value.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value.tolist()]
    return value.tolist()


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m serving.cli`) until the main kerasops CLI calls us."""
    parser = argparse.ArgumentParser(prog="kerasops")
    parser.add_argument("--params", default="params.yaml", help="params.yaml (serving: section)")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KerasopsError as exc:
        print(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
