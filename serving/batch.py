"""Batch scoring's two ends: inputs read as bounded batches with one key per example, and
predictions written as CSV or Parquet rows, atomically.

Inputs (`open_input`):

* a prepared dataset (its name under the prepared root, or its folder): each split's shards in
  order, only `x` decoded; key `<shard file>:<record index>`, e.g. `test-00000.tfrecord:17`;
* an image folder, class folders or flat: every image file under it, sorted, decoded and resized
  to the model's input as `kerasops predict` and preparation read images; key: its path in the
  folder (`cool/000017.jpg`);
* a CSV with a header row: for a model over feature rows (B, F) whose served version names its
  feature columns (`feature_names` in its `kerasops_export.json`, from the training data's
  manifest), the columns of those names in the model's order, wherever they stand in the file,
  any other column ignored, a missing one an error naming it; for a version without names,
  every column but the key, F of them, in file order; for a model over text the column named
  like its input (`text`); key: the row number (1 = first data row) or the `key_column`.

No source reads its whole input: each yields `Chunk`s of at most `batch_size` examples.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.prepared import load_prepared
from kerasops.data.readers import IMAGE_SUFFIXES, read_image
from kerasops.errors import ConfigError, KerasopsError
from kerasops.serving.errors import ServingError
from kerasops.serving.servable import TensorSpecInfo, check_shape, to_array

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SPLITS = ("train", "val", "test")
MAX_VALUES_PER_ROW = 4096  # an output wider than this (a mask, an image) is not a table column
PARQUET_ROW_GROUP = 65536


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Up to `batch_size` examples: their keys and values (B, ...) as read."""

    keys: list[str]
    values: np.ndarray


class BatchInput:
    """An input to score: what kind it is, how many examples it holds, and its chunks."""

    kind = ""
    column_rule = ""  # a CSV's: which columns are the model's input, and how they were chosen

    def __init__(self, path: Path, total: int) -> None:
        self.path = path
        self.total = total
        self.skipped: list[tuple[str, str]] = []  # (key, why) of examples left out

    def chunks(self, batch_size: int) -> Iterator[Chunk]:  # pragma: no cover - abstract
        raise NotImplementedError


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class DatasetInput(BatchInput):
    """A prepared dataset's splits, shard by shard."""

    kind = "dataset"

    def __init__(self, folder: Path, splits: tuple[str, ...], spec: TensorSpecInfo) -> None:
        prepared = load_prepared(folder.name, folder.parent)
        self.manifest = prepared.manifest
        want = spec.shape[1:] if spec.shape is not None else None
        have = tuple(self.manifest.input_shape)
        fits = want is None or _fits(have, want) or (have == () and want == (1,))
        if not fits:
            raise KerasopsError(
                f"dataset {self.manifest.name!r} holds examples of shape {_shape_text(have)}; "
                f"the model's input {spec.name!r} takes {_shape_text(want)}"
            )
        self.specs = [prepared.splits[s].shards for s in splits]
        super().__init__(folder, sum(s.count for s in self.specs))

    def chunks(self, batch_size: int) -> Iterator[Chunk]:
        for spec in self.specs:
            for file in spec.files:
                one = dataclasses.replace(spec, files=(file,))
                index = 0
                for (x,) in one.arrays(("x",), batch=batch_size):
                    keys = [f"{file.name}:{index + i}" for i in range(len(x))]
                    index += len(x)
                    yield Chunk(keys, x)


def _fits(have: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    if len(have) != len(want):
        return False
    return all(w is None or w == h for h, w in zip(have, want, strict=True))


class ImageFolderInput(BatchInput):
    """Every image file under a folder (class folders or flat), sorted by path."""

    kind = "images"

    def __init__(self, folder: Path, spec: TensorSpecInfo, skip_corrupt: bool) -> None:
        shape = spec.shape[1:] if spec.shape is not None else ()
        if len(shape) != 3 or shape[2] not in (1, 3) or None in shape[:2]:
            raise KerasopsError(
                f"{folder} is an image folder, but the model's input {spec.name!r} takes "
                f"{_shape_text(shape)}, not images of a fixed (height, width, 1 or 3 channels)"
            )
        self.size = (int(shape[0]), int(shape[1]))
        self.channels = int(shape[2])
        self.skip_corrupt = skip_corrupt
        self.files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.is_file()
        )
        if not self.files:
            raise KerasopsError(
                f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}), in class "
                "folders or flat"
            )
        super().__init__(folder, len(self.files))

    def chunks(self, batch_size: int) -> Iterator[Chunk]:
        mode = "grayscale" if self.channels == 1 else "rgb"
        keys: list[str] = []
        pixels: list[np.ndarray] = []
        for path in self.files:
            key = path.relative_to(self.path).as_posix()
            try:
                image = read_image(path, self.size, mode)  # (H, W) or (H, W, 3)
            except DataError as exc:
                if not self.skip_corrupt:
                    raise KerasopsError(f"{exc} (or pass --skip-corrupt)") from None
                self.skipped.append((key, str(exc)))
                continue
            keys.append(key)
            pixels.append(image.reshape(*self.size, self.channels))
            if len(keys) == batch_size:
                yield Chunk(keys, np.stack(pixels))  # (B, H, W, C)
                keys, pixels = [], []
        if keys:
            yield Chunk(keys, np.stack(pixels))


class CsvInput(BatchInput):
    """CSV rows: feature columns for a model over rows (B, F) or (B,), a text column for text.

    With `feature_names` (the served version's, in the order of its input's last axis) the
    features are the columns of those names, wherever they stand; other columns are ignored.
    Without them, every column but the key, in file order."""

    kind = "csv"

    def __init__(
        self,
        path: Path,
        spec: TensorSpecInfo,
        key_column: str | None,
        feature_names: tuple[str, ...] = (),
    ) -> None:
        self.key_column = key_column
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            self.header = next(reader, [])
            total = sum(1 for row in reader if row)
        if not self.header:
            raise KerasopsError(f"{path} is empty; a CSV to score needs a header row")
        if key_column is not None and key_column not in self.header:
            raise KerasopsError(
                f"{path} has no key column {key_column!r}; its columns: {', '.join(self.header)}"
            )
        shape = spec.shape[1:] if spec.shape is not None else None
        if spec.is_string:
            self.columns = self._text_column(path, spec)
            self.column_rule = f"text from column {self.header[self.columns[0]]!r}"
        elif shape is not None and len(shape) <= 1 and (not shape or shape[0] is not None):
            features = shape[0] if shape else 1
            if feature_names:
                self.columns = self._named_columns(path, spec, features, feature_names)
            else:
                self.columns = self._ordered_columns(path, spec, features)
        else:
            raise KerasopsError(
                f"the model's input {spec.name!r} takes {_shape_text(shape or ())} per example: "
                "CSV rows fit a model over feature rows (F values) or text; score a prepared "
                "dataset instead"
            )
        self.scalar = not spec.is_string and (shape == () or shape is None)
        self.is_text = spec.is_string
        super().__init__(path, total)

    def _ordered_columns(self, path: Path, spec: TensorSpecInfo, features: int) -> list[int]:
        """Every column but the key, in file order (a version that names no features)."""
        others = [i for i, c in enumerate(self.header) if c != self.key_column]
        if len(others) != features:
            names = ", ".join(self.header[i] for i in others) or "none"
            raise KerasopsError(
                f"{path}: the model's input {spec.name!r} takes {features} values per row; "
                f"the CSV has {len(others)} columns besides the key ({names})"
            )
        self.column_rule = (
            f"{features} features by column order (every column but the key: the version "
            "names no feature columns)"
        )
        return others

    def _named_columns(
        self, path: Path, spec: TensorSpecInfo, features: int, names: tuple[str, ...]
    ) -> list[int]:
        """The columns named `names`, in that order; the others are ignored."""
        if len(names) != features:
            raise KerasopsError(
                f"the served version names {len(names)} feature columns, but its input "
                f"{spec.name!r} takes {features} values per row; export the model again"
            )
        missing = [n for n in names if n not in self.header]
        if missing:
            raise KerasopsError(
                f"{path} has no column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}: the model's input "
                f"{spec.name!r} takes its {features} features by column name; the CSV's "
                f"columns: {', '.join(self.header)}"
            )
        repeated = sorted({n for n in names if self.header.count(n) > 1})
        if repeated:
            raise KerasopsError(
                f"{path} has more than one column named {', '.join(map(repr, repeated))}; "
                "keep one of each"
            )
        ignored = [c for c in self.header if c not in names and c != self.key_column]
        self.column_rule = f"{features} features by column name, in the model's order" + (
            f" (ignored: {_listed(ignored)})" if ignored else ""
        )
        return [self.header.index(n) for n in names]

    def _text_column(self, path: Path, spec: TensorSpecInfo) -> list[int]:
        for name in (spec.name, "text"):
            if name in self.header and name != self.key_column:
                return [self.header.index(name)]
        raise KerasopsError(
            f"{path} has no column {spec.name!r} (the model's text input); its columns: "
            f"{', '.join(self.header)}"
        )

    def chunks(self, batch_size: int) -> Iterator[Chunk]:
        key_index = None if self.key_column is None else self.header.index(self.key_column)
        keys: list[str] = []
        rows: list[Any] = []
        with self.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            next(reader)
            number = 0
            for row in reader:
                if not row:
                    continue
                number += 1
                if len(row) != len(self.header):
                    raise KerasopsError(
                        f"{self.path} row {number} has {len(row)} cells; the header has "
                        f"{len(self.header)}"
                    )
                keys.append(str(number) if key_index is None else row[key_index])
                rows.append(self._values(row, number))
                if len(keys) == batch_size:
                    yield Chunk(keys, self._array(rows))
                    keys, rows = [], []
        if keys:
            yield Chunk(keys, self._array(rows))

    def _values(self, row: list[str], number: int) -> Any:
        if self.is_text:
            return row[self.columns[0]]
        try:
            values = [float(row[i]) for i in self.columns]
        except ValueError:
            bad = next(i for i in self.columns if not _is_number(row[i]))
            raise KerasopsError(
                f"{self.path} row {number}, column {self.header[bad]!r}: {row[bad]!r} is not a "
                "number"
            ) from None
        return values[0] if self.scalar else values

    def _array(self, rows: list[Any]) -> np.ndarray:
        if self.is_text:
            values = np.empty(len(rows), dtype=object)  # (B,)
            values[:] = rows
            return values
        return np.asarray(rows, dtype=np.float64)  # (B, F) or (B,)


def _listed(names: list[str], limit: int = 10) -> str:
    """`names` joined, the first `limit` of them and a count of the rest."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def open_input(
    path: str,
    spec: TensorSpecInfo,
    prepared_root: Path,
    splits: tuple[str, ...] = SPLITS,
    skip_corrupt: bool = False,
    key_column: str | None = None,
    feature_names: tuple[str, ...] = (),
) -> BatchInput:
    """The input `path` names: a prepared dataset (a name under `prepared_root`, or a folder
    holding manifest.json), an image folder or a CSV file (its feature columns picked by
    `feature_names`, the served version's, when it has them). Raise KerasopsError for a missing
    or unreadable input, or one that does not fit the model's input `spec`."""
    given = Path(path).expanduser()
    if not given.exists() and (prepared_root / path / "manifest.json").is_file():
        given = prepared_root / path
    if not given.exists():
        raise KerasopsError(
            f"input not found: {path} (give a prepared dataset's name or folder, an image "
            f"folder or a CSV file; prepared datasets are under {prepared_root})"
        )
    if key_column is not None and not (given.is_file() and given.suffix.lower() == ".csv"):
        raise ConfigError("--key-column is for a CSV input")
    if given.is_dir() and (given / "manifest.json").is_file():
        return DatasetInput(given, splits, spec)
    if given.is_dir():
        return ImageFolderInput(given, spec, skip_corrupt)
    if given.suffix.lower() == ".csv":
        return CsvInput(given, spec, key_column, feature_names)
    raise KerasopsError(
        f"cannot score {given}: give a prepared dataset, an image folder or a .csv file"
    )


def fit_input(values: np.ndarray, spec: TensorSpecInfo, allow_nan: bool) -> np.ndarray:
    """`values` (B, ...) as the signature's input takes them (its dtype, a trailing 1 added
    where it wants one); raise KerasopsError when they do not fit."""
    if spec.shape is not None and len(spec.shape) == values.ndim + 1 and spec.shape[-1] == 1:
        values = values[..., None]
    try:
        array = to_array(values, spec, allow_nan)
        check_shape(array, spec)
    except ServingError as exc:
        raise KerasopsError(exc.message) from None
    return array


# -- predictions out -----------------------------------------------------------------------


def output_format(path: Path, given: str | None) -> str:
    """`csv` or `parquet`: `given`, else from the file's suffix; raise ConfigError."""
    if given is not None:
        if given not in FORMATS.values():
            raise ConfigError(f"--format {given!r}: use csv or parquet")
        return given
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ConfigError(
            f"cannot tell the format of {path} from its suffix: name it .csv or .parquet, or "
            "pass --format"
        )
    return found


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def prediction_columns(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each output as table columns of one value per row. A classifier's `probabilities` (B, K)
    become `class_id` (argmax), `class` (its name, from `classes`) and `probability_<name>` per
    class; any other output one column `<name>`, or `<name>_<i>` per value of a row."""
    columns: dict[str, Any] = {}
    probabilities = outputs.get("probabilities")
    classifier = probabilities is not None and probabilities.ndim == 2
    if classifier:
        count = probabilities.shape[1]
        classes = outputs.get("classes")
        names = _texts(classes[0]) if classes is not None and len(classes) else []
        names = names if len(names) == count else [str(k) for k in range(count)]
        ids = np.argmax(probabilities, axis=-1)  # (B,)
        columns["class_id"] = ids.astype(np.int64)
        columns["class"] = [names[i] for i in ids]
        for k, name in enumerate(names):
            columns[f"probability_{name}"] = probabilities[:, k]
    for name in sorted(outputs):
        if classifier and name in ("probabilities", "classes"):
            continue
        value = np.asarray(outputs[name])
        flat = value.reshape(len(value), -1)  # (B, values per row)
        if flat.shape[1] > MAX_VALUES_PER_ROW:
            raise KerasopsError(
                f"output {name!r} has {flat.shape[1]} values per row, more than a table row "
                f"holds ({MAX_VALUES_PER_ROW}); predict-batch writes classifiers', regressors' "
                "and other small outputs"
            )
        for i in range(flat.shape[1]):
            column = flat[:, i]
            column = _texts(column) if column.dtype == object else column
            columns[name if flat.shape[1] == 1 else f"{name}_{i}"] = column
    return columns


class PredictionTable:
    """Prediction rows (`key`, then the output columns) written to a temporary file beside
    `path`, renamed over `path` when the block ends well; a failure removes it and leaves an
    existing `path` as it was."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.format = fmt
        self.rows = 0
        self.columns: list[str] | None = None
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._handle: Any = None
        self._writer: Any = None
        self._pending: list[Any] = []
        self._pending_rows = 0

    def __enter__(self) -> PredictionTable:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == "csv":
                self._handle = self.temporary.open("w", newline="", encoding="utf-8")
                self._writer = csv.writer(self._handle)
            else:
                self.temporary.write_bytes(b"")  # fails now, not after scoring, if unwritable
        except OSError as exc:
            raise KerasopsError(
                f"cannot write {self.path}: {exc.strerror or exc} (choose a writable --output)"
            ) from None
        return self

    def write(self, keys: list[str], outputs: dict[str, np.ndarray]) -> None:
        """Append one batch: a row per key."""
        columns = {"key": keys, **prediction_columns(outputs)}
        if self.columns is None:
            self.columns = list(columns)
            if self.format == "csv":
                self._writer.writerow(self.columns)
        elif list(columns) != self.columns:
            raise KerasopsError("the model's outputs changed their columns between batches")
        if self.format == "csv":
            lists = [v.tolist() if isinstance(v, np.ndarray) else v for v in columns.values()]
            self._writer.writerows(zip(*lists, strict=True))
        else:
            self._add_parquet(columns)
        self.rows += len(keys)

    def _add_parquet(self, columns: dict[str, Any]) -> None:
        import pyarrow as pa  # deferred: only Parquet output needs it
        import pyarrow.parquet as pq

        table = pa.table(columns)
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.temporary), table.schema)
        self._pending.append(table.cast(self._writer.schema))
        self._pending_rows += table.num_rows
        if self._pending_rows >= PARQUET_ROW_GROUP:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa  # deferred: only Parquet output needs it

        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if self.format == "csv":
                self._handle.close()
            elif self._writer is not None:
                if kind is None:
                    self._flush_parquet()
                self._writer.close()
            if kind is None:
                if self.columns is None:
                    raise KerasopsError("nothing was scored: the input held no examples")
                os.replace(self.temporary, self.path)
        finally:
            self.temporary.unlink(missing_ok=True)
