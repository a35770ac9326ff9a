"""The MLflow model registry as retraining uses it: versions tagged with the data version and
params hash that made them, the aliases `challenger`, `champion` and `previous`, and the gate's
verdict on each challenger. Call `store.configure(params)` first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kerasops.serving.sources import ModelSource, load_from_mlflow

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
TAG_DATA = "kerasops.data_version"
TAG_PARAMS = "params_hash"  # set by the train step on every run
TAG_GATE = "kerasops.gate"  # promoted | rejected | infra_failed, once a cycle decided
DECIDED = ("promoted", "rejected", "infra_failed")


def client() -> MlflowClient:
    """An MlflowClient on the configured store."""
    return MlflowClient()


def aliases(name: str) -> dict[str, str]:
    """Alias -> version of a registered model ({} when the model is not registered yet)."""
    try:
        model = client().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def model_versions(name: str) -> list[Any]:
    """Every registered version of `name`, oldest first."""
    found = client().search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def set_aliases(name: str, wanted: Mapping[str, str | None]) -> None:
    """Point each alias at a version, or delete it (None)."""
    mlflow_client, current = client(), aliases(name)
    for alias, version in wanted.items():
        if version is None:
            if alias in current:
                mlflow_client.delete_registered_model_alias(name, alias)
        elif current.get(alias) != version:
            mlflow_client.set_registered_model_alias(name, alias, version)


def load_version(name: str, version: str) -> ModelSource:
    """The Keras model of a registered version, with its run's config.json and lineage."""
    return load_from_mlflow(f"models:/{name}/{version}")


def tag_verdict(name: str, version: str, run_id: str, verdict: str) -> None:
    """Mark a challenger version (and its run) with the cycle's verdict."""
    mlflow_client = client()
    mlflow_client.set_model_version_tag(name, version, TAG_GATE, verdict)
    mlflow_client.set_tag(run_id, TAG_GATE, verdict)
