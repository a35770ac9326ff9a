"""Where an exported model comes from: a training output folder or an MLflow run / registry URI.

Training writes `artifacts/models/<model>-<dataset>/model.keras` with `config.json` beside it and
logs the same model to MLflow (`runs:/<run_id>/model`, `models:/<name>/<version>`,
`models:/<name>@<alias>`), with `config.json` as a run artifact.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.data import load_prepared
from kerasops.errors import KerasopsError

log = logging.getLogger(__name__)


class SourceError(KerasopsError):
    """The model to export cannot be found or loaded."""


@dataclasses.dataclass
class ModelSource:
    """A loaded Keras model with its resolved run config and lineage."""

    model: Any
    run_config: dict[str, Any]
    info: dict[str, Any]

    def default_name(self) -> str:
        model, dataset = self.run_config.get("model"), self.run_config.get("dataset")
        if model and dataset:
            return f"{model}-{dataset}"
        raise SourceError("cannot tell the model's name from config.json: pass --name")


def _register_custom_layers() -> None:
    """Custom layers register themselves with Keras when `models` is imported."""
    importlib.import_module("kerasops.models")


def load_from_folder(path: Path) -> ModelSource:
    """A training output folder (model.keras + config.json) or a single .keras file."""
    # deferred: Keras loads TensorFlow; only loading a model needs it
    import keras

    _register_custom_layers()
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.is_file():
        raise SourceError(f"no model found at {path} (expected model.keras): train one first")
    config_file = model_file.parent / "config.json"
    run_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    model = keras.saving.load_model(model_file)
    return ModelSource(model, run_config, {"source": str(model_file.resolve())})


def load_from_mlflow(model_uri: str) -> ModelSource:
    """`runs:/<run_id>/model`, `models:/<name>/<version>` or `models:/<name>@<alias>`, from the
    store MLflow is pointed at (the caller points it: the project's, or a server)."""
    # deferred: MLflow loads slowly; only an MLflow source needs it
    import mlflow

    _register_custom_layers()
    run_id = _run_id(model_uri)
    try:
        model = mlflow.keras.load_model(model_uri)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI
        raise SourceError(f"cannot load {model_uri} from MLflow: {exc}") from None
    run_config: dict[str, Any] = {}
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.json")
        run_config = json.loads(Path(local).read_text())
    except Exception:  # noqa: BLE001 - config.json is optional lineage
        log.warning("run %s has no config.json artifact", run_id)
    return ModelSource(model, run_config, {"source": model_uri, "mlflow_run_id": run_id})


def _run_id(model_uri: str) -> str:
    # deferred: MLflow loads slowly; only an MLflow source needs it
    from mlflow.tracking import MlflowClient

    match = re.match(r"^runs:/([^/]+)/", model_uri)
    if match:
        return match.group(1)
    match = re.match(r"^models:/([^/@]+)(?:/(\d+)|@(.+))$", model_uri)
    if not match:
        raise SourceError(
            f"unsupported model URI {model_uri!r}: use runs:/<run_id>/model, "
            "models:/<name>/<version> or models:/<name>@<alias>"
        )
    name, version, alias = match.groups()
    client = MlflowClient()
    try:
        found = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, alias)
        )
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"{model_uri} is not in the MLflow registry: {exc}") from None
    return found.run_id


def dataset_examples(
    run_config: dict[str, Any], prepared_root: Path, count: int
) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    """Real test examples of the model's dataset (for warmup) and its class names; (None, None)
    with a warning when the prepared dataset cannot be read."""
    dataset = run_config.get("dataset")
    if not dataset:
        return None, None
    try:
        prepared = load_prepared(dataset, Path(prepared_root))
    except Exception as exc:  # noqa: BLE001 - warmup is an optimisation, never a blocker
        log.warning("no warmup requests written: cannot read dataset %s (%s)", dataset, exc)
        return None, None
    examples = np.asarray(prepared.splits["test"].head(count).x) if count else None
    return examples, tuple(prepared.manifest.classes) or None
