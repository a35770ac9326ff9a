"""The `kerasops` command line. Each command parses its arguments, loads params.yaml once, and
calls the one function that defines its step (`kerasops.pipelines.steps`).

Commands live by area: `training` (train, evaluate, compare, lineage, list, ui), `data`
(prepare, validate, data setup|add|verify), `serving` (export, serve, predict) and
`orchestration` (run-pipeline, retrain, rollback, schedule). Step modules are imported inside
the commands: they load TensorFlow and MLflow, which `--help` and a bad argument never need.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from kerasops.errors import KerasopsError
from kerasops.pipelines.cli import data, orchestration, serving, training

AREAS = (training, data, serving, orchestration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasops", description="Keras models from data to production."
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one `error:` line and exit with status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
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
