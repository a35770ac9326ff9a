"""Prepare a dataset: load its source, split it and write versioned files atomically."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.config import StrictConfig
from kerasops.data.errors import DataError
from kerasops.data.manifest import Manifest, content_hash
from kerasops.data.npz import sha256_file, write_npz
from kerasops.data.sources import LoadedDataset, SourceConfig, load_source, parse_source_config
from kerasops.data.splits import SPLITS
from kerasops.data.tasks import class_labels, is_labelled

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def prepare_dataset(
    name: str, config: Mapping[str, Any] | StrictConfig, raw_root: Path, prepared_root: Path
) -> Manifest:
    """Write `<prepared_root>/<name>/{train,val,test}.npz` and `manifest.json`; return the manifest.

    The files appear all at once: they are written to a temporary folder that then replaces the
    previous version, so a failed prepare leaves the previous version untouched.
    Raises DataError or ConfigError for a bad name, config or raw input.
    """
    check_dataset_name(name)
    source_config = as_source_config(config, prefix=f"datasets.{name}.")
    loaded = load_source(source_config, Path(raw_root), name)
    return _write_atomically(name, source_config, loaded, Path(prepared_root))


def check_dataset_name(name: str) -> None:
    """Raise DataError unless `name` can be a folder name (letters, digits, `_`, `-`, `.`)."""
    if not _NAME.match(name):
        raise DataError(
            f"dataset name {name!r} is not a plain folder name; use letters, digits, _, - or ."
        )


def as_source_config(config: Mapping[str, Any] | StrictConfig, prefix: str = "") -> SourceConfig:
    """A source config as is, or one parsed from a mapping with a `source` key."""
    if isinstance(config, SourceConfig):
        return config
    if isinstance(config, StrictConfig):
        raise DataError(f"{type(config).__name__} is not a dataset source config")
    if not isinstance(config, Mapping):
        raise DataError(f"{prefix.rstrip('.')}: expected a mapping, got {config!r}")
    return parse_source_config(config, prefix=prefix)


def _write_atomically(
    name: str, config: SourceConfig, loaded: LoadedDataset, prepared_root: Path
) -> Manifest:
    prepared_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=prepared_root))
    try:
        files = {}
        for split in SPLITS:
            x, y = loaded.splits[split]
            write_npz(staging / f"{split}.npz", {"x": x, "y": y})
            files[f"{split}.npz"] = sha256_file(staging / f"{split}.npz")
        manifest = _manifest(name, config, loaded, files)
        manifest.write(staging / "manifest.json")
        _replace(staging, prepared_root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _replace(staging: Path, target: Path) -> None:
    """Swap `staging` in for `target`; the old version is removed only once the new one is there."""
    if not target.exists():
        staging.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.rename(retired / target.name)
    try:
        staging.rename(target)
    except OSError:
        (retired / target.name).rename(target)
        raise
    finally:
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)


def _manifest(
    name: str, config: SourceConfig, loaded: LoadedDataset, files: dict[str, str]
) -> Manifest:
    x_train, y_train = loaded.splits["train"]
    return Manifest(
        name=name,
        source=config.source,
        kind=loaded.kind,
        task=loaded.task,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        input_dtype=loaded.input_dtype,
        target_shape=tuple(int(d) for d in y_train.shape[1:]),
        classes=loaded.classes,
        splits={s: int(len(loaded.splits[s][1])) for s in SPLITS},
        class_counts=_class_counts(loaded),
        stats=loaded.stats,
        files=files,
        content_hash=content_hash(files),
        config=config.to_dict(),
    )


def _class_counts(loaded: LoadedDataset) -> dict[str, dict[str, int]]:
    """Examples (for detection: boxes) per class of each split; {} for tasks without classes."""
    if not is_labelled(loaded.task):
        return {}
    counts = {}
    for split in SPLITS:
        labels = class_labels(loaded.splits[split][1], loaded.task).astype(np.int64)
        per_class = np.bincount(labels, minlength=len(loaded.classes))
        counts[split] = {c: int(n) for c, n in zip(loaded.classes, per_class, strict=True)}
    return counts
