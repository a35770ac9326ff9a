"""The prepare step: a dataset from its raw files into versioned prepared files."""

from __future__ import annotations

from kerasops.data import Manifest, PreparedData, load_prepared, prepare_dataset
from kerasops.data.errors import DataError
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
    """
    config = params.dataset(dataset)
    prepared_root = params.path("prepared_data")
    try:
        prepared = load_prepared(dataset, prepared_root)
    except DataError:
        if (prepared_root / dataset / "manifest.json").exists():
            raise
        prepared = None
    if prepared is None or prepared.manifest.config != config.to_dict():
        prepare(params, dataset)
        prepared = load_prepared(dataset, prepared_root)
    return prepared
