"""What a Prefect deployment of kerasops runs before its flow, on the worker: `enter_project`,
the pull step of `prefect.yaml`, moves the flow run into the project folder the worker serves
(the folder holding params.yaml, `artifacts/` and `data/`), wherever that worker runs: a
checkout on a laptop, `/app` in the compose worker, `/work` in the GPU worker."""

from __future__ import annotations

import os
from pathlib import Path

from kerasops.errors import ConfigError

PROJECT_VARIABLE = "KERASOPS_PROJECT_DIR"


def enter_project(directory: str = "") -> dict[str, str]:
    """Pull step: `chdir` into `directory` (prefect.yaml passes the worker's
    `$KERASOPS_PROJECT_DIR`); return it as the step's output `directory`.

    Raises ConfigError naming the fix when the folder is unset, missing or holds no params.yaml.
    """
    if not directory:
        raise ConfigError(
            f"{PROJECT_VARIABLE} is not set in the worker's environment: start the worker with "
            f"{PROJECT_VARIABLE}=<the kerasops project folder, holding params.yaml>"
        )
    folder = Path(directory).expanduser().resolve()
    if not (folder / "params.yaml").is_file():
        raise ConfigError(
            f"{PROJECT_VARIABLE}={directory} holds no params.yaml: point it at the project folder"
        )
    os.chdir(folder)
    return {"directory": str(folder)}
