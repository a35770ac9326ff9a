"""The challenger of a retraining cycle: the data version it is trained on, its training run
(reused when one already exists for the same data and config) and its registered version."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import mlflow

from kerasops.pipelines.config import Params, RunConfig
from kerasops.pipelines.steps.prepare import ensure_prepared
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.steps.train import MODEL_URI_TAG, train_model
from kerasops.pipelines.tracking import registry
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.lineage import dataset_version
from kerasops.pipelines.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DECIDED,
    TAG_DATA,
    TAG_GATE,
    TAG_PARAMS,
)
from kerasops.pipelines.training.distribute import require_one_process

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Challenger:
    """A registered model version trained for this cycle (or found from an earlier try)."""

    name: str
    version: str
    run_id: str
    data_version: str
    params_hash: str
    trained: bool  # False: an earlier try's run or version was reused


def detect_data_version(params: Params, dataset: str) -> str:
    """Prepare `dataset` when needed and return the DVC hash of its prepared version."""
    ensure_prepared(params, dataset)
    return dataset_version(params, dataset)


def has_new_data(name: str, data_version: str) -> bool:
    """False when a cycle already decided on a challenger trained on `data_version`."""
    return not any(
        v.tags.get(TAG_DATA) == data_version and v.tags.get(TAG_GATE) in DECIDED
        for v in registry.model_versions(name)
    )


@named("detect-data-version")
def detect_new_data(params: Params, dataset: str, name: str) -> tuple[str, bool]:
    """The cycle's detect step: the prepared data version, and whether no cycle decided on it."""
    version = detect_data_version(params, dataset)
    return version, has_new_data(name, version)


def find_training_run(run: RunConfig, data_version: str) -> str | None:
    """The newest finished run of this config on this data version, if any."""
    runs = mlflow.search_runs(
        filter_string=(
            f"tags.model = '{run.model}' and tags.dataset = '{run.dataset}' and "
            f"tags.`{TAG_DATA}` = '{data_version}' and "
            f"tags.{TAG_PARAMS} = '{run.params_hash()}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def train_challenger(
    params: Params,
    run: RunConfig,
    data_version: str,
    tags: Mapping[str, str] | None = None,
    fresh: bool = False,
) -> tuple[str, bool]:
    """Train (tracked in MLflow) unless a finished run for the same inputs exists, or always
    with `fresh`. Returns the run id and whether it was trained now. Raises ConfigError for
    `multi_worker`."""
    require_one_process(run.train)
    tracking.configure(params)
    existing = None if fresh else find_training_run(run, data_version)
    if existing is not None:
        log.info("reusing run %s: same data version and config", existing)
        return existing, False
    run_tags = {TAG_DATA: data_version, "kerasops.flow": "retraining", **(tags or {})}
    return train_model(params, run, tags=run_tags).run_id, True


def register_challenger(
    name: str, run_id: str, data_version: str, params_hash: str, trained: bool
) -> Challenger:
    """Register the run's model as a version of `name` (once) and alias it `challenger`."""
    existing = [v for v in registry.model_versions(name) if v.run_id == run_id]
    if existing:
        version = existing[-1]
    else:
        tags = {TAG_DATA: data_version, TAG_PARAMS: params_hash, "kerasops.run_id": run_id}
        logged = registry.client().get_run(run_id).data.tags.get(MODEL_URI_TAG)
        uri = logged or f"runs:/{run_id}/model"  # runs trained before the tag existed
        version = mlflow.register_model(uri, name, tags=tags)
    if registry.aliases(name).get(CHAMPION) != str(version.version):
        registry.set_aliases(name, {CHALLENGER: str(version.version)})
    return Challenger(name, str(version.version), run_id, data_version, params_hash, trained)


@named("train-challenger")
def train_and_register(
    params: Params,
    run: RunConfig,
    name: str,
    data_version: str,
    tags: Mapping[str, str] | None = None,
    fresh: bool = False,
) -> Challenger:
    """The cycle's train step: a challenger trained (or, unless `fresh`, reused from an
    earlier try with the same data and config) and registered."""
    run_id, trained = train_challenger(params, run, data_version, tags, fresh)
    return register_challenger(name, run_id, data_version, run.params_hash(), trained)


@named("record-verdict")
def record_verdict(challenger: Challenger, verdict: str) -> None:
    """Mark the challenger version (and its run) with the cycle's verdict; a rejected
    challenger loses the `challenger` alias."""
    registry.tag_verdict(challenger.name, challenger.version, challenger.run_id, verdict)
    current = registry.aliases(challenger.name)
    if verdict != "promoted" and current.get(CHALLENGER) == challenger.version:
        registry.set_aliases(challenger.name, {CHALLENGER: None})
