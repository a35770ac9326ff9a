"""`kerasops prepare`, `validate` and `data setup|add|verify` (DVC versioning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasops.pipelines.cli.common import params_of


def cmd_prepare(args: argparse.Namespace) -> int:
    from kerasops.pipelines.steps.prepare import prepare  # deferred: loads TensorFlow

    manifest = prepare(params_of(args), args.dataset)
    counts = ", ".join(f"{k} {v}" for k, v in manifest.splits.items())
    print(f"prepared {manifest.name} ({manifest.kind}, {manifest.task}): {counts}")
    print(f"content hash {manifest.content_hash}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from kerasops.pipelines.steps.validate import validate  # deferred: loads TensorFlow

    report = validate(params_of(args), args.dataset, keep=not args.no_keep)
    print(report.to_markdown())
    print(report.summary())
    return 0


def cmd_data_setup(args: argparse.Namespace) -> int:
    from kerasops.pipelines.tracking.dvc import setup_dvc  # deferred: loads TensorFlow

    for line in setup_dvc(params_of(args), remote=args.remote) or ["DVC already set up"]:
        print(line)
    return 0


def cmd_data_add(args: argparse.Namespace) -> int:
    from kerasops.pipelines.tracking.dvc import add_dataset  # deferred: loads TensorFlow

    params = params_of(args)
    version, folder = add_dataset(params, Path(args.path), args.name, push=not args.no_push)
    relative = folder.relative_to(Path(params.root).resolve())
    print(f"dataset {args.name}: version {version} in {relative}")
    print(f"record it: git commit {relative}.dvc -m 'data: {args.name} version'")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from kerasops.pipelines.tracking.dvc import verify_data  # deferred: loads TensorFlow

    params = params_of(args)
    for line in verify_data(params, args.datasets or params.pipeline.datasets):
        print(line)
    print("all data matches its recorded versions")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser("prepare", help="prepare a dataset into data/prepared/NAME")
    prepare.add_argument("dataset", help="dataset name (built-in, or declared in params.yaml)")
    prepare.set_defaults(func=cmd_prepare)

    validate = sub.add_parser("validate", help="validate prepared data against its reference")
    validate.add_argument("dataset", help="prepared dataset name")
    validate.add_argument(
        "--no-keep", action="store_true", help="do not keep this version as the next reference"
    )
    validate.set_defaults(func=cmd_validate)

    data = sub.add_parser("data", help="version datasets with DVC")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    setup = data_sub.add_parser("setup", help="dvc init, default local remote, track raw data")
    setup.add_argument("--remote", help="remote folder or URL (default: local cache folder)")
    setup.set_defaults(func=cmd_data_setup)
    add = data_sub.add_parser("add", help="version a file or folder as data/raw/NAME")
    add.add_argument("path", help="file or folder holding the dataset")
    add.add_argument("--name", required=True, help="dataset name")
    add.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    add.set_defaults(func=cmd_data_add)
    verify = data_sub.add_parser("verify", help="check data against its DVC-recorded hashes")
    verify.add_argument("datasets", nargs="*", help="default: pipeline.datasets")
    verify.set_defaults(func=cmd_data_verify)
