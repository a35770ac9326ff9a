"""How a flow ends on a user's mistake: failed, with the project's one `error:` line as its
state message and in its logs, instead of a traceback. Calling the flow directly still raises
the error itself (the state carries it), so the CLI prints it as any other command does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prefect import get_run_logger
from prefect.states import Failed, State

from kerasops.errors import ConfigError, KerasopsError

T = TypeVar("T")


def user_errors_fail(body: Callable[[], T]) -> T | State:
    """`body()`, or a Failed state whose message is `error: <the mistake>`."""
    try:
        return body()
    except KerasopsError as exc:
        message = f"error: {exc}"
        get_run_logger().error(message)
        return Failed(message=message, data=exc)


def params_file(params_path: str) -> str:
    """`params_path` if it names a file, else ConfigError: a deployment names one explicitly."""
    if not Path(params_path).is_file():
        raise ConfigError(
            f"params file {params_path!r} not found in {Path.cwd()}: pass params_path as the "
            "deployment's parameter, relative to the project folder"
        )
    return params_path
