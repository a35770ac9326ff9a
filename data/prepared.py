"""Read a prepared dataset back, checking every shard against its manifest hash."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.manifest import Manifest
from kerasops.data.shards import ShardSpec, check_shard
from kerasops.data.splits import SPLITS


class Split:
    """One split's inputs x (N, *input_shape) and targets y (N, *target_shape).

    Either arrays in memory (`Split(x, y)`), or shards on disk (`Split(shards=spec)`) that
    `make_tf_dataset` streams. Reading `x` or `y` of a sharded split decodes the whole split into
    memory, once: meant for small datasets and small parts (`head`); `batches` streams.
    """

    def __init__(
        self, x: np.ndarray | None = None, y: np.ndarray | None = None, *, shards=None
    ) -> None:
        if shards is None and (x is None or y is None):
            raise ValueError("a Split needs x and y arrays, or shards")
        self._x, self._y, self.shards = x, y, shards

    @property
    def x(self) -> np.ndarray:
        if self._x is None:
            self._x = _concat([b[0] for b in self.shards.arrays(("x",))], self.shards, "x")
        return self._x

    @property
    def y(self) -> np.ndarray:
        if self._y is None:
            self._y = _concat([b[0] for b in self.shards.arrays(("y",))], self.shards, "y")
        return self._y

    def __len__(self) -> int:
        return self.shards.count if self._y is None else len(self._y)

    def head(self, count: int) -> Split:
        """The first `count` examples, in memory."""
        if self.shards is None or self._x is not None:
            return Split(np.asarray(self.x)[:count], np.asarray(self.y)[:count])
        xs, ys, taken = [], [], 0
        for x, y in self.shards.arrays(batch=min(max(1, count), 1024)):
            xs.append(x[: count - taken])
            ys.append(y[: count - taken])
            taken += len(xs[-1])
            if taken >= count:
                break
        return Split(_concat(xs, self.shards, "x"), _concat(ys, self.shards, "y"))

    def batches(self, size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) numpy batches in stored order, without holding the split in memory."""
        if self.shards is None or self._x is not None:
            x, y = np.asarray(self.x), np.asarray(self.y)
            for start in range(0, len(self), size):
                yield x[start : start + size], y[start : start + size]
            return
        for x, y in self.shards.arrays(batch=size):
            yield _texts(x, self.shards.x_encoding), _texts(y, self.shards.y_encoding)

    def target_batches(self, size: int = 1024) -> Iterator[np.ndarray]:
        """y batches in stored order, reading only the targets, without holding the split."""
        if self.shards is None or self._y is not None:  # in memory already
            y = np.asarray(self._y)
            for start in range(0, len(y), size):
                yield y[start : start + size]
            return
        for (y,) in self.shards.arrays(("y",), batch=size):
            yield _texts(y, self.shards.y_encoding)


def _texts(values: np.ndarray, encoding: str) -> np.ndarray:
    """Decoded UTF-8 strings as an object array of str, as preparation held them."""
    if encoding != "string":
        return values
    out = np.empty(len(values), dtype=object)  # (N,)
    out[:] = [v.decode("utf-8") for v in values]
    return out


def _concat(parts: list[np.ndarray], spec: ShardSpec, part: str) -> np.ndarray:
    encoding = spec.x_encoding if part == "x" else spec.y_encoding
    shape = spec.input_shape if part == "x" else spec.target_shape
    if not parts:
        dtype = object if encoding == "string" else ("int32" if encoding == "int32" else "float32")
        return np.zeros((0, *shape), dtype=dtype)
    return _texts(np.concatenate(parts), encoding)


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A prepared dataset: its manifest and its train, val and test splits (and a held-out
    split such as `unseen_voice` where its source made one)."""

    manifest: Manifest
    splits: dict[str, Split]


def load_prepared(name: str, prepared_root: Path, verify: bool = True) -> PreparedData:
    """Open `<prepared_root>/<name>/`; with `verify`, re-hash each shard against the manifest.

    Nothing is decoded here: the splits stream from their shards. Raises DataError when the
    dataset is not prepared, or a shard is missing or modified.
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
        listed = manifest.shards.get(split)
        if not listed:
            raise DataError(f"{folder / 'manifest.json'} lists no shards of {split}; {remedy}")
        for file in listed:
            check_shard(folder / file, manifest.files.get(file), verify, remedy)
        splits[split] = Split(shards=shard_spec(manifest, folder, split))
    for split in sorted(set(manifest.shards) - set(SPLITS)):  # a held-out split, if any
        for file in manifest.shards[split]:
            check_shard(folder / file, manifest.files.get(file), verify, remedy)
        splits[split] = Split(shards=shard_spec(manifest, folder, split))
    return PreparedData(manifest=manifest, splits=splits)


def shard_spec(manifest: Manifest, folder: Path, split: str) -> ShardSpec:
    """How to read `split` of the dataset prepared in `folder`."""
    listed = manifest.shards[split]
    return ShardSpec(
        files=tuple(Path(folder) / f for f in listed),
        count=sum(listed.values()),
        x_encoding=manifest.encodings["x"],
        y_encoding=manifest.encodings["y"],
        input_shape=tuple(manifest.input_shape),
        target_shape=tuple(manifest.target_shape),
    )
