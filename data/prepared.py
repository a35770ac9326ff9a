"""Read a prepared dataset back, checking every file against its manifest hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.manifest import Manifest
from kerasops.data.npz import read_npz, sha256_file
from kerasops.data.splits import SPLITS


@dataclasses.dataclass(frozen=True)
class Split:
    """One split's inputs x (N, *input_shape) and targets y (N, *target_shape)."""

    x: np.ndarray
    y: np.ndarray


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A prepared dataset: its manifest and its train, val and test splits."""

    manifest: Manifest
    splits: dict[str, Split]


def load_prepared(name: str, prepared_root: Path, verify: bool = True) -> PreparedData:
    """Load `<prepared_root>/<name>/`; with `verify`, re-hash each file against the manifest.

    Raises DataError when the dataset is not prepared, or a file is missing, modified or corrupt.
    """
    folder = Path(prepared_root) / name
    remedy = f"run `kerasops prepare {name}` again"
    if not (folder / "manifest.json").is_file():
        raise DataError(
            f"dataset {name!r} is not prepared in {prepared_root}; run `kerasops prepare {name}`"
        )
    manifest = Manifest.read(folder / "manifest.json")
    splits = {}
    for split in SPLITS:
        path = folder / f"{split}.npz"
        _check_file(path, manifest.files.get(path.name), verify, remedy)
        arrays = read_npz(path, remedy=remedy)
        if set(arrays) != {"x", "y"}:
            raise DataError(f"{path} does not hold arrays x and y; {remedy}")
        splits[split] = Split(x=arrays["x"], y=arrays["y"])
    return PreparedData(manifest=manifest, splits=splits)


def _check_file(path: Path, expected: str | None, verify: bool, remedy: str) -> None:
    if expected is None:
        raise DataError(f"{path.parent / 'manifest.json'} does not list {path.name}; {remedy}")
    if not path.is_file():
        raise DataError(f"{path} is missing; {remedy}")
    if verify and sha256_file(path) != expected:
        raise DataError(f"{path} no longer matches its manifest hash; {remedy}")
