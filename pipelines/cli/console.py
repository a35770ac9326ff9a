"""What the terminal shows while a command runs.

Quiet by default: TensorFlow's native start-up lines (the CUDA probe on a machine without a
GPU, absl's pre-initialisation notice), Python warnings known to be harmless here, and the INFO
logs of TensorFlow and MLflow are kept off the terminal. `kerasops --verbose ...` or
`KERASOPS_LOG_LEVEL=debug` shows all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

LEVEL_VARIABLE = "KERASOPS_LOG_LEVEL"

# Warnings that say nothing a kerasops user can act on (each explained where it comes from).
HARMLESS_WARNINGS = (
    # a model saved with its optimizer is loaded for inference: the optimizer is not needed
    r"Skipping variable loading for optimizer",
    # Keras Applications built with weights=None at a size its ImageNet weights do not have
    r"`input_shape` is undefined or non-square",
    # MLflow's check of pip requirements that kerasops states explicitly
    r"Found the following pip requirements",
)


def verbose_requested(flag: bool) -> bool:
    """Whether the user asked for everything: `--verbose` or KERASOPS_LOG_LEVEL=debug|info."""
    return flag or os.environ.get(LEVEL_VARIABLE, "").lower() in ("debug", "info", "verbose")


def configure(verbose: bool) -> None:
    """Set the terminal up for one command, before anything imports TensorFlow."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its own on import
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("tensorflow", "absl", "mlflow", "alembic", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with native stderr muted: the lines its C++
    libraries print then (before they read TF_CPP_MIN_LOG_LEVEL) never reach the terminal.
    A Python error raised meanwhile still propagates once stderr is back."""
    with muted_native_stderr():
        import tensorflow as tf  # deferred: only commands that use TensorFlow load it

        tf.config.list_physical_devices()
    tf.get_logger().setLevel(logging.ERROR)


@contextlib.contextmanager
def muted_native_stderr() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (what C++ code writes to)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
