"""The built-in datasets and how a params.yaml `datasets:` entry extends them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kerasops.config import StrictConfig
from kerasops.data.errors import DataError
from kerasops.data.prepare import as_source_config, check_dataset_name

_SPLIT = {"val_fraction": 0.15, "test_fraction": 0.15, "seed": 42, "shard_size_mb": 128.0}

BUILTIN_DATASETS: dict[str, dict] = {
    "digits": {"source": "sklearn_digits", **_SPLIT},
    "sunspots": {"source": "statsmodels_sunspots", "window": 20, "horizon": 1, **_SPLIT},
    "bbc_news": {"source": "bbc_news", "drop_duplicates": True, **_SPLIT},
    "breast_cancer": {"source": "sklearn_breast_cancer", **_SPLIT},
    "mnist": {"source": "keras_mnist", "path": None, **_SPLIT},
    "imdb": {"source": "keras_imdb", "path": None, "word_index_path": None, **_SPLIT},
    "detection_digits": {
        "source": "digits_detection",
        "num_images": 1500,
        "canvas_size": 48,
        "min_object_size": 12,
        "max_object_size": 20,
        "max_objects": 3,
        "canvas_seed": 0,
        **_SPLIT,
    },
    "segmentation_digits": {
        "source": "digits_segmentation",
        "num_images": 1000,
        "canvas_size": 48,
        "min_object_size": 12,
        "max_object_size": 20,
        "max_objects": 3,
        "canvas_seed": 0,
        **_SPLIT,
    },
    "speech_commands": {
        "source": "speech_commands",
        "words": ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"],
        "voices": [
            "en+m1",
            "en+m3",
            "en+f1",
            "en+f3",
            "en-us+m2",
            "en-us+f4",
            "en-gb-scotland+m4",
            "en-029+f2",
        ],
        "unseen_voice": "en-us+m7",
        "speeds": [120, 150, 180, 210],
        "pitches": [25, 40, 55, 70],
        "takes": 4,
        "noise_snr_db": [10.0, 30.0],
        "generation_seed": 0,
        "sample_rate": 16000,
        **_SPLIT,
    },
    "bbc_news_lm": {
        "source": "bbc_news_lm",
        "window": 128,
        "stride": 0,
        "max_documents": 0,
        "lowercase": False,
        **_SPLIT,
    },
    "dates": {
        "source": "generated_dates",
        "examples": 20000,
        "first_year": 1950,
        "last_year": 2049,
        "generation_seed": 7,
        **_SPLIT,
    },
}


def resolve_dataset_config(name: str, declared: Mapping[str, Mapping]) -> StrictConfig:
    """The source config of dataset `name`: its built-in defaults updated by `declared[name]`.

    An entry with another `source` than the built-in's replaces the defaults instead.
    Raises DataError for an unknown name, ConfigError for a bad key or value.
    """
    check_dataset_name(name)
    entry = (declared or {}).get(name)
    if entry is not None and not isinstance(entry, Mapping):
        raise DataError(f"datasets.{name}: expected a mapping of settings, got {entry!r}")
    defaults = BUILTIN_DATASETS.get(name)
    if defaults is None and entry is None:
        known = ", ".join(sorted({*BUILTIN_DATASETS, *(declared or {})}))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}")
    values: dict[str, Any] = dict(defaults or {})
    if entry is not None:
        same_source = entry.get("source", values.get("source")) == values.get("source")
        values = {**values, **entry} if same_source else dict(entry)
    return as_source_config(values, prefix=f"datasets.{name}.")
