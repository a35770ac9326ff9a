"""Files a user has at hand turned into the batch a served model's signature takes.

`kerasops predict --input` reads, by suffix:

* `.npy`: the batch as is; `.json`: a list of examples or a TF Serving request body
  (`instances` / `inputs`);
* image files (or a folder of them): decoded, converted to grayscale or RGB and resized to the
  model's input shape, as pixel values 0-255, the way `image_folder` preparation reads them;
* `.csv`: numeric columns (a header row is allowed). A model over feature rows, (B, F), takes
  every row as one example; a model over windows, (B, T, F), takes the last T rows as one window;
  a model over text takes the `text` column (or the first one);
* `.txt`: one text example per non-empty line, for models over text.

Each example keeps a short name (file name, row number or the text itself) for the answer.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.readers import IMAGE_SUFFIXES, read_image
from kerasops.errors import KerasopsError
from kerasops.serving.client import InputSpec

NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_STRING": object,
}


@dataclasses.dataclass(frozen=True)
class Batch:
    """Inputs for one call: `values` (a batch array, or {input name: batch}) and one short name
    per example."""

    values: Any
    names: tuple[str, ...]


def read_batch(paths: Sequence[Path], spec: InputSpec | None) -> Batch:
    """The batch the files at `paths` make for an input like `spec` (None: .npy/.json only)."""
    files = _expand(paths)
    suffixes = {path.suffix.lower() for path in files}
    if suffixes <= {".npy", ".json"}:
        if len(files) != 1:
            raise KerasopsError("give one .npy or .json file, or image, CSV or text files")
        values = read_array_file(files[0])
        first = next(iter(values.values())) if isinstance(values, dict) else values
        return Batch(values, tuple(f"example {i}" for i in range(len(first))))
    if spec is None:  # pragma: no cover - the CLI always reads the signature first
        raise KerasopsError("reading image, CSV or text files needs the model's input signature")
    if suffixes <= set(IMAGE_SUFFIXES):
        return _images(files, spec)
    if suffixes == {".csv"}:
        return _csv_rows(files, spec)
    if suffixes == {".txt"}:
        return _text_lines(files, spec)
    raise KerasopsError(
        f"cannot mix or read {', '.join(sorted(suffixes))} inputs: give .npy/.json, image files "
        f"({', '.join(IMAGE_SUFFIXES)}), .csv or .txt files"
    )


def read_array_file(path: Path) -> Any:
    """A batch from .npy, or from .json (a list of examples, or `instances`/`inputs`)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KerasopsError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(document, dict) and "inputs" in document:
        document = document["inputs"]
    elif isinstance(document, dict) and "instances" in document:
        document = document["instances"]
    if isinstance(document, dict):
        return {key: np.asarray(value) for key, value in document.items()}
    return np.asarray(document)


def _expand(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise KerasopsError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise KerasopsError(f"input file not found: {path}")
    return files


def _numpy_dtype(spec: InputSpec) -> Any:
    if spec.dtype not in NUMPY_DTYPES:
        raise KerasopsError(f"input {spec.name!r} has dtype {spec.dtype}: pass a .npy batch")
    return NUMPY_DTYPES[spec.dtype]


def _images(files: list[Path], spec: InputSpec) -> Batch:
    shape = spec.shape[1:]
    if len(shape) != 3 or shape[2] not in (1, 3) or None in shape[:2]:
        raise KerasopsError(
            f"model input {spec.name!r} has shape {_shape_text(spec.shape)}, not an image of "
            "fixed (height, width, 1 or 3 channels): pass a .npy batch"
        )
    height, width, channels = shape
    mode = "grayscale" if channels == 1 else "rgb"
    try:
        pixels = [read_image(path, (height, width), mode) for path in files]
    except DataError as exc:
        raise KerasopsError(str(exc)) from None
    batch = np.stack(pixels).reshape(len(files), height, width, channels)
    return Batch(batch.astype(_numpy_dtype(spec)), tuple(str(path) for path in files))


def _csv_rows(files: list[Path], spec: InputSpec) -> Batch:
    if spec.dtype == "DT_STRING":
        texts = [text for path in files for text in _text_column(path)]
        return _texts(texts, spec)
    shape = spec.shape[1:]
    if len(shape) not in (1, 2) or shape[-1] is None:
        raise KerasopsError(
            f"model input {spec.name!r} has shape {_shape_text(spec.shape)}: CSV rows fit a "
            "model over feature rows (B, F) or windows (B, T, F); pass a .npy batch"
        )
    features = shape[-1]
    examples, names = [], []
    for path in files:
        rows = _numeric_rows(path, features)
        if len(shape) == 1:
            examples.extend(rows)
            names.extend(f"{path.name} row {i + 1}" for i in range(len(rows)))
            continue
        steps = shape[0]
        if steps is not None and len(rows) < steps:
            raise KerasopsError(
                f"{path} has {len(rows)} rows; the model reads windows of {steps}: give at "
                f"least {steps} rows (the last {steps} are used)"
            )
        examples.append(rows[-steps:] if steps else rows)
        names.append(f"{path.name} last {len(examples[-1])} rows")
    return Batch(np.asarray(examples, dtype=_numpy_dtype(spec)), tuple(names))


def _numeric_rows(path: Path, features: int) -> list[list[float]]:
    """The numeric columns of every row; a header and non-numeric columns (dates) are left out."""
    with path.open(newline="", encoding="utf-8") as handle:
        table = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if table and not all(_is_number(cell) for cell in table[0] if cell.strip()):
        header, table = table[0], table[1:]
    else:
        header = [f"column {i + 1}" for i in range(len(table[0]) if table else 0)]
    if not table:
        raise KerasopsError(f"{path} has no data rows")
    numeric = [i for i in range(len(header)) if all(_is_number(row[i]) for row in table)]
    if len(numeric) != features:
        names = ", ".join(header[i] for i in numeric) or "none"
        raise KerasopsError(
            f"{path}: the model takes {features} values per row; the file has {len(numeric)} "
            f"numeric columns ({names})"
        )
    return [[float(row[i]) for i in numeric] for row in table]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _text_column(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if not columns:
            raise KerasopsError(f"{path} has no header row; a text CSV needs a `text` column")
        column = "text" if "text" in columns else columns[0]
        return [row[column] for row in reader if row.get(column)]


def _text_lines(files: list[Path], spec: InputSpec) -> Batch:
    if spec.dtype != "DT_STRING":
        raise KerasopsError(
            f"model input {spec.name!r} takes {spec.dtype} values, not text: pass image, CSV "
            "or .npy inputs"
        )
    texts = [line.strip() for path in files for line in path.read_text("utf-8").splitlines()]
    return _texts([text for text in texts if text], spec)


def _texts(texts: list[str], spec: InputSpec) -> Batch:
    if not texts:
        raise KerasopsError("the input files hold no text")
    batch = np.asarray(texts, dtype=object)
    if len(spec.shape) == 2:  # (B, 1)
        batch = batch[:, None]
    names = tuple(text if len(text) <= 40 else text[:37] + "..." for text in texts)
    return Batch(batch, names)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if dim is None else str(dim) for dim in shape) + ")"
