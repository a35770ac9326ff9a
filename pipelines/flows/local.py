"""Prefect's local mode: without `PREFECT_API_URL`, Prefect starts a temporary server itself,
with its database under `artifacts/prefect/`. Its settings are read when Prefect is first
imported, so the CLI calls `local_prefect` before importing any flow."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params


def local_prefect(params: Params) -> None:
    """Prefect in local mode unless a server is configured: its database under artifacts/.

    `PREFECT_HOME=artifacts/prefect prefect server start` shows these runs in the Prefect UI.
    """
    if "PREFECT_API_URL" in os.environ:
        return
    home = os.environ.setdefault("PREFECT_HOME", str(params.path("artifacts") / "prefect"))
    os.makedirs(home, exist_ok=True)  # its SQLite database lives here
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    # the temporary server needs longer than Prefect's 20 s default on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def start_temporary_server(timeout: int = 180) -> None:
    """Start Prefect's temporary server now, under a spinner that shows the wait, rather than
    silently at the flow's first API call (the flow's client then finds it running).

    Does nothing when a server is configured (`PREFECT_API_URL`). Raises KerasopsError naming
    the fixes when it does not answer within `timeout` seconds.
    """
    if "PREFECT_API_URL" in os.environ:
        return
    # deferred: Prefect reads its settings when imported, after local_prefect set them
    from prefect.server.api.server import SubprocessASGIServer
    from rich.console import Console

    server = SubprocessASGIServer()
    console = Console(stderr=True)
    try:
        with (
            console.status("starting Prefect's temporary server (local mode)", spinner="dots"),
            muted_prefect_banner(),
        ):
            server.start(timeout=timeout)
    except RuntimeError as exc:
        raise KerasopsError(
            f"{exc}; set PREFECT_API_URL to a running server, or raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        ) from None
    console.print(f"Prefect's temporary server is up on {server.address}", highlight=False)


@contextlib.contextmanager
def muted_prefect_banner() -> Iterator[None]:
    """Prefect's own start-up lines, which the spinner replaces."""
    logger = logging.getLogger("prefect")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
