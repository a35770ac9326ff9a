"""Readers for the user formats: an image folder, a text CSV, a series CSV and a parallel CSV
(tabular and text CSVs stream through data/csv_table.py).

Built-in datasets are first written out in one of these formats, so every dataset, built-in or
the user's own, is read by the same code.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from kerasops.data.errors import DataError
from kerasops.data.progress import progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
ColorMode = Literal["grayscale", "rgb"]


@dataclasses.dataclass(frozen=True)
class LabeledExamples:
    """Inputs with one label per example: x (N, ...) and labels (N,) as strings."""

    x: np.ndarray
    labels: np.ndarray


def resolve_path(path: str, raw_root: Path) -> Path:
    """An absolute `path` as is; a relative one under `raw_root`. Raise DataError if missing."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path(raw_root) / resolved
    if not resolved.exists():
        raise DataError(
            f"{resolved} does not exist; check `path` (a relative path is read under {raw_root})"
        )
    return resolved


def read_image_folder(
    folder: Path, image_size: tuple[int, int], color_mode: ColorMode
) -> LabeledExamples:
    """Read `folder/<class>/<image>`: x (N, H, W, C) float32 pixel values, labels = class names."""
    files, _ = image_files(folder)
    channels = 1 if color_mode == "grayscale" else 3
    x = np.zeros((len(files), *image_size, channels), dtype=np.float32)  # (N, H, W, C)
    for i, path in enumerate(progress(files, len(files), f"reading {folder.name}", "img")):
        x[i] = read_image(path, image_size, color_mode).reshape(*image_size, channels)
    labels = np.array([p.parent.name for p in files], dtype=str)
    return LabeledExamples(x=x, labels=labels)


def image_files(folder: Path, skip_other: bool = False) -> tuple[list[Path], list[Path]]:
    """The images of `folder/<class>/`, sorted, and (with `skip_other`) the other files skipped.

    Raises DataError for a missing folder, no class folders, a stray file, an empty class
    folder, or (without `skip_other`) a file that is not an image.
    """
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; an image dataset is one subfolder per class")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p))
    if not class_dirs:
        raise DataError(f"{folder} has no class subfolders; put images in {folder}/<class>/")
    stray = sorted(p for p in folder.iterdir() if p.is_file() and not _hidden(p))
    if stray:
        raise DataError(f"{stray[0]} is outside a class folder; move it into {folder}/<class>/")
    files, skipped = [], []
    for class_dir in class_dirs:
        found = sorted(p for p in class_dir.iterdir() if not _hidden(p))
        images = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p for p in found if p not in images]
        if others and not skip_other:
            raise DataError(
                f"{others[0]} is not an image (expected {', '.join(IMAGE_SUFFIXES)}); "
                "remove it from the class folder or set skip_corrupt: true"
            )
        if not images:
            raise DataError(f"class folder {class_dir} has no images; add some or remove it")
        files.extend(images)
        skipped.extend(others)
    return files, skipped


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def read_image(path: Path, image_size: tuple[int, int], color_mode: ColorMode) -> np.ndarray:
    """One image file as float32 pixel values 0-255, (H, W) grayscale or (H, W, 3) RGB, resized
    to `image_size` (rows, columns) as preparation does. Raise DataError if it is no image."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if color_mode == "grayscale" else "RGB")
            if image.size != (image_size[1], image_size[0]):
                image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(
            f"{path} cannot be read as an image ({exc}); remove or replace it"
        ) from None


def read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    """Read a UTF-8 CSV with a header: (column names, rows). Raise DataError on missing columns."""
    if not path.is_file():
        raise DataError(f"{path} is not a file; expected a CSV file with a header row")
    csv.field_size_limit(2**31 - 1)  # long articles are single fields
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'none'}); "
            f"add a header row naming {', '.join(required)}"
        )
    if not rows:
        raise DataError(f"{path} has a header but no rows; add examples")
    return columns, rows


def read_text_csv(path: Path) -> LabeledExamples:
    """Read a `text,label` CSV: x (N,) object array of str, labels (N,) str."""
    _, rows = read_csv(path, ("text", "label"))
    x = np.empty(len(rows), dtype=object)  # (N,) one string per example
    x[:] = [row["text"] for row in rows]
    labels = np.array([row["label"] for row in rows], dtype=str)
    for i, label in enumerate(labels):
        if not label.strip():
            raise DataError(f"{path} row {i + 2} has an empty label; give every row a label")
    return LabeledExamples(x=x, labels=labels)


def read_series_csv(path: Path, value_column: str, time_column: str | None) -> np.ndarray:
    """Read one numeric column of a CSV as a series (N,) float64, ordered by `time_column`."""
    required = (value_column,) if time_column is None else (value_column, time_column)
    _, rows = read_csv(path, required)
    if time_column is not None:
        rows = sorted(rows, key=lambda row: _time_key(row[time_column]))
    return np.array(
        [to_number(row[value_column], path, i, value_column) for i, row in enumerate(rows)],
        dtype=np.float64,
    )


def _time_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)  # ISO dates and times sort as text


def to_number(value: str, path: Path, index: int, column: str) -> float:
    """`value` as a finite float; raise DataError naming the file, row and column."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DataError(
            f"{path} row {index + 2}, column {column}: {value!r} is not a number; fix or drop it"
        )
    return number


def read_parallel_csv(
    path: Path, source_column: str, target_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read a parallel corpus CSV: sources (N,) and targets (N,), object arrays of str."""
    _, rows = read_csv(path, (source_column, target_column))
    for i, row in enumerate(rows):
        if not row[source_column].strip() or not row[target_column].strip():
            raise DataError(
                f"{path} row {i + 2} has an empty {source_column} or {target_column}; "
                "fill or drop it"
            )
    sources = np.empty(len(rows), dtype=object)  # (N,)
    sources[:] = [row[source_column] for row in rows]
    targets = np.empty(len(rows), dtype=object)  # (N,)
    targets[:] = [row[target_column] for row in rows]
    return sources, targets


def read_text_documents(path: Path) -> list[str]:
    """The documents of a plain-text corpus: one `.txt` file, or every `.txt` file under a
    folder (sorted by path), each file one document. Raise DataError when there is no text."""
    files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
    files = [f for f in files if not _hidden(f)]
    if not files:
        raise DataError(f"{path} holds no .txt files; point `path` at a text file or a folder")
    documents = []
    for file in files:
        data = file.read_bytes()
        try:
            documents.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"{file} is not UTF-8 text; convert it or remove it") from None
    return documents
