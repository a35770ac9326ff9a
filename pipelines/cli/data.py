"""`kerasops prepare`, `validate` and `data setup|add|verify` (DVC versioning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasops.errors import ConfigError
from kerasops.pipelines.cli.common import add_overrides, params_of

# The sources that read a user's own files (kerasops.data.describe.INFER), named here so that
# `--help` needs no import of the data layer.
USER_SOURCES = (
    "detection_csv",
    "image_folder",
    "segmentation_folder",
    "audio_folder",
    "tabular_csv",
    "text_corpus",
    "text_csv",
    "timeseries_csv",
    "translation_csv",
)


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
    # deferred: versioning loads TensorFlow (params.yaml is typed against the model registry)
    from kerasops.config import parse_override
    from kerasops.data.describe import suggest_entry
    from kerasops.pipelines.config.edit import entry_yaml, write_dataset_entry
    from kerasops.pipelines.tracking.dvc import add_dataset

    given = dict(parse_override(item) for item in args.set)
    if given and not args.source:
        raise ConfigError("data add: --set KEY=VALUE describes a --source; name it")
    params = params_of(args)
    if args.source:  # check the files fit the source before versioning anything
        suggest_entry(args.source, Path(args.path).resolve(), args.name, given)
    version, folder = add_dataset(params, Path(args.path), args.name, push=not args.no_push)
    relative = folder.relative_to(Path(params.root).resolve())
    print(f"dataset {args.name}: version {version} in {relative}")
    if args.source:
        raw = folder.relative_to(params.path("raw_data")).as_posix()
        entry = suggest_entry(args.source, folder, raw, given)
        if args.no_write:
            print(f"declare it in params.yaml under `datasets:`:\n{entry_yaml(args.name, entry)}")
        else:
            write_dataset_entry(Path(args.params), args.name, entry)
            print(f"params.yaml: datasets.{args.name} = {dict(entry)}")
    else:
        print(
            f"declare it in params.yaml under `datasets:` (source and its keys), or add it with "
            f"--source: kerasops data add {args.path} --name {args.name} --source image_folder"
        )
    print(f"record it: git commit {relative}.dvc params.yaml -m 'data: {args.name} version'")
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
    add = data_sub.add_parser(
        "add", help="version a file or folder as data/raw/NAME and declare it in params.yaml"
    )
    add.add_argument("path", help="file or folder holding the dataset")
    add.add_argument("--name", required=True, help="dataset name")
    add.add_argument(
        "--source",
        choices=sorted(USER_SOURCES),
        help="how to read it: writes its datasets.NAME entry, with the keys the files tell",
    )
    add_overrides(add, "a key of the source, e.g. --set image_size=[64,64] (repeatable)")
    add.add_argument(
        "--no-write", action="store_true", help="print the datasets entry instead of writing it"
    )
    add.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    add.set_defaults(func=cmd_data_add)
    verify = data_sub.add_parser("verify", help="check data against its DVC-recorded hashes")
    verify.add_argument("datasets", nargs="*", help="default: pipeline.datasets")
    verify.set_defaults(func=cmd_data_verify)
