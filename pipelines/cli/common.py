"""What every command module shares: loading params.yaml from `--params`, and `--set`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kerasops.pipelines.config import Params


def params_of(args: argparse.Namespace) -> Params:
    """params.yaml as `--params` names it, typed (the one place commands read it)."""
    # deferred: params.yaml is typed against the model registry, which loads TensorFlow
    from kerasops.pipelines.config import load_params

    return load_params(args.params)


def add_overrides(parser: argparse.ArgumentParser, what: str = "a model or train key") -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=f"override {what}"
    )
