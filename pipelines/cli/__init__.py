"""The `kerasops` command line. Each command parses its arguments, loads params.yaml once, and
calls the one function that defines its step (`kerasops.pipelines.steps`).

Commands live by area: `training` (train, evaluate, compare, lineage, list, ui), `data`
(prepare, validate, data setup|add|verify), `serving` (export, serve, predict),
`orchestration` (run-pipeline, retrain, rollback, schedule) and `batch` (predict-batch). Step
modules are imported inside the commands: they load TensorFlow and MLflow, which `--help` and a
bad argument never need.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kerasops.errors import KerasopsError
from kerasops.pipelines.cli import batch, console, data, orchestration, serving, training

AREAS = (training, data, serving, orchestration, batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasops", description="Keras models from data to production."
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's native logs, library INFO logs and every warning "
        f"(or set {console.LEVEL_VARIABLE}=debug)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.add_commands(sub)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    completion.set_defaults(func=cmd_completion, needs_tensorflow=False)
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    """`eval "$(kerasops completion bash)"` completes commands and options in this shell."""
    import shtab  # deferred: only this command needs it

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one `error:` line and exit with status 2."""
    args = build_parser().parse_args(argv)
    verbose = console.verbose_requested(args.verbose)
    console.configure(verbose)  # before TensorFlow is first imported
    try:
        needs_tensorflow = getattr(args, "needs_tensorflow", True)
        if callable(needs_tensorflow):
            needs_tensorflow = needs_tensorflow(args)
        if not verbose and needs_tensorflow:
            console.load_tensorflow_quietly()
        return args.func(args)
    except KerasopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
