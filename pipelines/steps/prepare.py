"""The prepare step: a dataset from its raw files into versioned prepared files."""

from __future__ import annotations

import json
from pathlib import Path

from kerasops.data import Manifest, PreparedData, load_prepared, prepare_dataset
from kerasops.data.errors import DataError
from kerasops.data.manifest import SCHEMA_VERSION
from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import named


@named("prepare")
def prepare(params: Params, dataset: str) -> Manifest:
    """Prepare `dataset` from its params.yaml entry (or its built-in defaults) into
    `<prepared_data>/<dataset>/`; return its manifest. Raises DataError or ConfigError."""
    return prepare_dataset(
        dataset, params.dataset(dataset), params.path("raw_data"), params.path("prepared_data")
    )


def ensure_prepared(params: Params, dataset: str) -> PreparedData:
    """The prepared `dataset`, prepared first when missing or when its config changed.

    Prepared files that exist but fail their hash check raise DataError: never papered over.
    A version in an older prepared format is prepared again.
    """
    config = params.dataset(dataset)
    prepared_root = params.path("prepared_data")
    try:
        prepared = load_prepared(dataset, prepared_root)
    except DataError:
        manifest = prepared_root / dataset / "manifest.json"
        if manifest.exists() and not _older_format(manifest):
            raise
        prepared = None
    if prepared is None or prepared.manifest.config != config.to_dict():
        prepare(params, dataset)
        prepared = load_prepared(dataset, prepared_root)
    return prepared


def _older_format(manifest: Path) -> bool:
    """Whether `manifest` was written by an older kerasops (another prepared format)."""
    try:
        version = json.loads(manifest.read_text(encoding="utf-8")).get("schema_version", 1)
    except (OSError, ValueError, AttributeError):
        return False
    return version != SCHEMA_VERSION
