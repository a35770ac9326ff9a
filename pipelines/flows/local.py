"""Prefect's local mode: without `PREFECT_API_URL`, Prefect starts a temporary server itself,
with its database under `artifacts/prefect/`. Its settings are read when Prefect is first
imported, so the CLI calls `local_prefect` before importing any flow."""

from __future__ import annotations

import os

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
