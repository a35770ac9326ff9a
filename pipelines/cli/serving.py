"""`kerasops export`, `serve` and `predict`: the export step, the embedded server, a client."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.errors import ConfigError, KerasopsError
from kerasops.pipelines.cli.common import params_of


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the export, serve, predict and deploy subcommands."""
    _add_export(subparsers)
    _add_serve(subparsers)
    _add_predict(subparsers)
    _add_deploy(subparsers)


def _add_deploy(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="write deployment manifests for a served model (KServe)"
    )
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    kserve = targets.add_parser(
        "kserve",
        help="KServe InferenceService manifests: TF Serving runtime (v1) and kerasops (v1 + v2)",
        description=(
            "Writes inferenceservice-tensorflow.yaml (KServe's TensorFlow runtime reading "
            "<storage-uri>/NAME) and inferenceservice-kerasops.yaml (the kerasops server image, "
            "docker/serve.Dockerfile, reading the repository at <storage-uri>, answering TF "
            "Serving's v1 API and the Open Inference Protocol v2). Apply with kubectl apply -f."
        ),
    )
    kserve.add_argument("name", help="served model name (a folder of the model repository)")
    kserve.add_argument(
        "--storage-uri",
        required=True,
        help="where the cluster reads the model repository (s3://bucket/serving/models, pvc://...)",
    )
    kserve.add_argument("--image", default="kerasops-serve:latest", help="kerasops server image")
    kserve.add_argument("--namespace", default="", help="Kubernetes namespace (default: none)")
    kserve.add_argument("--min-replicas", type=int, default=1, help="0 scales to zero (1)")
    kserve.add_argument("--max-replicas", type=int, default=3, help="upper bound (3)")
    kserve.add_argument(
        "--scale-metric",
        choices=["concurrency", "rps", "cpu", "memory"],
        default="concurrency",
        help="what the autoscaler watches (concurrency: in-flight requests per pod)",
    )
    kserve.add_argument(
        "--scale-target", type=int, default=8, help="per-replica target of the metric (8)"
    )
    kserve.add_argument(
        "--canary-traffic-percent",
        type=int,
        help="on an update, the share of traffic the new revision gets (the rest stays)",
    )
    kserve.add_argument("--model-repository", help="local repository holding NAME (checked)")
    kserve.add_argument(
        "--output", help="folder for the manifests (default: <artifacts>/deploy/kserve/NAME)"
    )
    kserve.set_defaults(func=deploy_kserve_command)


def deploy_kserve_command(args: argparse.Namespace) -> int:
    # deferred: only this command writes manifests
    from kerasops.serving.kserve import KServeOptions, write_kserve_manifests

    params = params_of(args)
    options = KServeOptions(
        storage_uri=args.storage_uri,
        image=args.image,
        namespace=args.namespace,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        scale_metric=args.scale_metric,
        scale_target=args.scale_target,
        canary_traffic_percent=args.canary_traffic_percent,
    )
    repository = Path(args.model_repository or params.serving.model_repository)
    default_output = params.path("artifacts") / "deploy" / "kserve" / args.name
    output = Path(args.output) if args.output else default_output
    for path in write_kserve_manifests(args.name, repository, options, output):
        print(path)
    print(f"apply with: kubectl apply -f {output}")
    return 0


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
    parser.add_argument(
        "--run-id", help="MLflow run whose `model` to export (its id, or a unique prefix)"
    )
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
        "--prepared-root",
        help="prepared datasets, for warmup examples (default: paths.prepared_data)",
    )
    parser.set_defaults(func=export_command)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the model repository over TF Serving's REST and gRPC APIs"
    )
    parser.add_argument(
        "--models-config",
        help="models.config (model_config_list) to serve; with --model-repository, its "
        "base paths under serving.models_config_base_path are folders of that repository",
    )
    parser.add_argument(
        "--model-repository", help="serve every model folder of a repository (see --models-config)"
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--rest-port", type=int, help="REST port (default 8501)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8500)")
    parser.set_defaults(func=serve_command)


TOKEN_VARIABLE = "KERASOPS_INFERENCE_TOKEN"


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="call a served model with image files, CSV rows, text lines or an array file",
        description=(
            "Image files (or a folder of them) are converted to the model's input size and "
            "channels; a CSV gives feature rows or, for a sequence model, its last rows as one "
            "window; a .txt gives one text per line; .npy/.json pass a batch as is. A "
            "classifier's answer names the classes, most likely first."
        ),
    )
    parser.add_argument("model", help="served model name")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        action="extend",
        metavar="PATH",
        help="image files or a folder of them, .csv, .txt, .npy, or .json (a list of examples "
        "or a TF Serving request body)",
    )
    parser.add_argument("--grpc", action="store_true", help="call over gRPC instead of REST")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="model version")
    choice.add_argument("--label", help="version label")
    parser.add_argument("--signature", help="signature name (default serving_default)")
    parser.add_argument("--url", help="REST URL or gRPC host:port (default: local server)")
    parser.add_argument(
        "--top", type=int, default=5, help="classes listed per example for a classifier (5)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="print the outputs as the server returns them"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)"
    )
    guarded = parser.add_argument_group("a guarded server (serving.inference_token_*, serving.tls)")
    guarded.add_argument(
        "--token-file",
        help=f"file holding the inference bearer token (default: ${TOKEN_VARIABLE} if set)",
    )
    guarded.add_argument("--ca-file", help="CA certificate that signed the server's (TLS)")
    guarded.add_argument("--cert-file", help="client certificate, for mutual TLS")
    guarded.add_argument("--key-file", help="client private key, for mutual TLS")
    parser.set_defaults(func=predict_command, needs_tensorflow=lambda args: args.grpc)


def credentials_of(args: argparse.Namespace) -> Any:
    """The token and TLS files `predict` was given, as the client takes them."""
    from kerasops.serving.client import Credentials  # deferred: the client loads gRPC

    token = os.environ.get(TOKEN_VARIABLE, "")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            message = f"cannot read --token-file {args.token_file}: {exc.strerror}"
            raise KerasopsError(message) from None
    if bool(args.cert_file) != bool(args.key_file):
        raise ConfigError("predict: --cert-file and --key-file go together (mutual TLS)")
    return Credentials(token, args.ca_file or "", args.cert_file or "", args.key_file or "")


def export_command(args: argparse.Namespace) -> int:
    # deferred: the spinner's terminal library is needed only when exporting
    from rich.console import Console

    # deferred: loading and exporting a model loads TensorFlow and MLflow
    from kerasops.pipelines.steps.export import export_model
    from kerasops.pipelines.tracking import store
    from kerasops.pipelines.tracking.runs import resolve_run_id
    from kerasops.serving.sources import load_from_folder, load_from_mlflow

    chosen = [x for x in (args.model, args.run_id, args.model_uri) if x]
    if len(chosen) != 1:
        raise ConfigError("export: give exactly one of MODEL (folder), --run-id or --model-uri")
    params = params_of(args)
    serving = params.serving.replace(
        **{
            key: str(Path(value).resolve())
            for key, value in (
                ("model_repository", args.model_repository),
                ("models_config", args.models_config),
            )
            if value
        }
    )
    if args.model:
        source = load_from_folder(Path(args.model))
    else:
        if args.tracking_uri:
            store.point_mlflow_at(args.tracking_uri)
        else:
            store.configure(params)
        run_id = resolve_run_id(params, args.run_id) if args.run_id else None
        source = load_from_mlflow(args.model_uri or f"runs:/{run_id}/model")
    prepared = Path(args.prepared_root).resolve() if args.prepared_root else None
    with Console(stderr=True).status("exporting the SavedModel and its warmup requests"):
        result = export_model(
            params, source, args.name, args.version, args.label, serving, prepared_root=prepared
        )
    print(
        f"exported {result.model_name} version {result.version} to {result.path} "
        f"(signatures: {', '.join(result.signatures)}; {result.warmup_records} warmup requests)"
    )
    return 0


def serve_command(args: argparse.Namespace) -> int:
    from kerasops.serving.server import serve  # deferred: loads TensorFlow

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    chosen = {"host": args.host, "rest_port": args.rest_port, "grpc_port": args.grpc_port}
    config = params_of(args).serving.replace(**{k: v for k, v in chosen.items() if v is not None})
    serve(config, args.models_config, args.model_repository)
    return 0


def predict_command(args: argparse.Namespace) -> int:
    # deferred: the gRPC client loads TensorFlow
    from kerasops.serving.client import connect
    from kerasops.serving.inputs import read_batch

    ref = {"version": args.version, "label": args.label}
    paths = [Path(path) for path in args.input]
    credentials = credentials_of(args)
    with connect(args.url, args.grpc, args.timeout, credentials) as client:
        arrays_only = all(path.suffix in (".npy", ".json") for path in paths)
        spec = (
            None
            if arrays_only
            else client.input_spec(args.model, **ref, signature_name=args.signature)
        )
        batch = read_batch(paths, spec)
        outputs = client.predict(args.model, batch.values, **ref, signature_name=args.signature)
    if "probabilities" in outputs and not args.raw:
        for line in labelled_answers(outputs, batch.names, args.top):
            print(json.dumps(line))
    else:
        print(json.dumps({key: _jsonable(value) for key, value in outputs.items()}))
    return 0


def labelled_answers(outputs: dict[str, np.ndarray], names: tuple[str, ...], top: int) -> list:
    """One answer per example: its most likely class and the `top` classes' probabilities, named
    by the model's `classes` output (class indices for a model exported without one)."""
    probabilities = np.asarray(outputs["probabilities"], dtype=float)
    probabilities = probabilities.reshape(len(probabilities), -1)
    classes = outputs.get("classes")
    answers = []
    for i, row in enumerate(probabilities):
        labels = [str(n) for n in range(row.size)] if classes is None else _texts(classes[i])
        order = np.argsort(-row, kind="stable")[:top]
        answers.append(
            {
                "input": names[i] if i < len(names) else f"example {i}",
                "class": labels[order[0]],
                "probabilities": {labels[k]: round(float(row[k]), 6) for k in order},
            }
        )
    return answers


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
