"""A user's own files described as a params.yaml `datasets:` entry: the keys the files tell
(where they are, image size and colour mode, CSV columns, the task) inferred, the user's own
keys on top, and the whole entry checked by its source's config before anything is written."""

from __future__ import annotations

import collections
import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from kerasops.data.errors import DataError
from kerasops.data.sources import SOURCES, parse_source_config

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
TIME_COLUMNS = ("date", "time", "timestamp", "datetime", "ds", "year", "month", "day")
SAMPLE = 200  # images or rows looked at to infer a setting


def suggest_entry(
    source: str, folder: Path, relative: str, given: Mapping[str, Any]
) -> dict[str, Any]:
    """The `datasets:` entry for files at `folder` (`relative` to the raw data root) read by
    `source`: inferred keys, then `given` over them. Raises DataError or ConfigError (naming
    the key) when the files do not fit the source."""
    if source not in INFER:
        known = ", ".join(sorted(INFER))
        builtin = f"{source!r} is a built-in source" if source in SOURCES else f"{source!r}"
        raise DataError(f"{builtin} does not read a user's files; use one of: {known}")
    entry = {"source": source, **INFER[source](folder, relative, given), **given}
    parse_source_config(entry, prefix="datasets.<name>.")  # every key and type checked
    return entry


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_settings(paths: list[Path]) -> dict[str, Any]:
    """The most common (height, width) and the colour mode of up to SAMPLE images."""
    sizes, modes = collections.Counter(), set()
    for path in paths[:SAMPLE]:
        try:
            with Image.open(path) as image:
                sizes[(image.height, image.width)] += 1
                modes.add(image.mode)
        except (OSError, UnidentifiedImageError):
            raise DataError(f"{path} is not a readable image; remove or replace it") from None
    (height, width), _ = sizes.most_common(1)[0]
    mode = "grayscale" if modes <= GRAYSCALE_MODES else "rgb"
    return {"image_size": [height, width], "color_mode": mode}


def _image_folder(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    classes = [p for p in sorted(folder.iterdir()) if p.is_dir() and _images(p)]
    if len(classes) < 2:
        raise DataError(
            f"{folder} needs one subfolder of images per class (at least two), e.g. "
            f"{folder}/cat/001.jpg and {folder}/dog/001.jpg"
        )
    return {"path": relative, **_image_settings(_images(folder))}


def _one_file(
    folder: Path, relative: str, suffixes: tuple[str, ...], what: str
) -> tuple[Path, str]:
    """The single file of `folder` with one of `suffixes` (the file `data add` copied)."""
    if folder.is_file():
        return folder, relative
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise DataError(
            f"{folder} should hold one {what} ({' or '.join(suffixes)}); found {listed}"
        )
    return found[0], f"{relative}/{found[0].name}"


def _header_and_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path} is empty; it needs a header row naming its columns")
        rows = [row for _, row in zip(range(SAMPLE), reader, strict=False)]
    return [h.strip() for h in header], rows


def _numeric(rows: list[list[str]], index: int) -> bool:
    try:
        return bool(rows) and all(float(row[index]) == float(row[index]) for row in rows)
    except (ValueError, IndexError):
        return False


def _text_csv(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    path, entry_path = _one_file(folder, relative, (".csv",), "CSV of text and label columns")
    header, _ = _header_and_rows(path)
    missing = {"text", "label"} - set(header)
    if missing:
        raise DataError(f"{path} needs columns `text` and `label`; its header is {header}")
    return {"path": entry_path}


def _tabular_csv(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    path, entry_path = _one_file(folder, relative, (".csv",), "CSV of feature columns")
    header, rows = _header_and_rows(path)
    label = given.get("label_column", "label")
    if label not in header:
        raise DataError(f"{path} has no column {label!r}: pass label_column=<one of {header}>")
    index = header.index(label)
    values = {row[index] for row in rows if len(row) > index}
    numeric = _numeric(rows, index)
    few_whole = numeric and len(values) <= 20 and all(float(v).is_integer() for v in values)
    task = "classification" if not numeric or few_whole else "regression"
    return {"path": entry_path, "label_column": label, "task": task}


def _timeseries_csv(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    path, entry_path = _one_file(folder, relative, (".csv",), "CSV of a series")
    header, rows = _header_and_rows(path)
    time_column = given.get("time_column") or next(
        (h for h in header if h.lower() in TIME_COLUMNS), None
    )
    numeric = [h for i, h in enumerate(header) if h != time_column and _numeric(rows, i)]
    value = given.get("value_column") or (numeric[0] if len(numeric) == 1 else None)
    if value is None:
        raise DataError(
            f"{path}: pass value_column=<the series to forecast>, one of {numeric or header}"
        )
    entry: dict[str, Any] = {"path": entry_path, "value_column": value}
    return {**entry, "time_column": time_column} if time_column else entry


def _translation_csv(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    path, entry_path = _one_file(folder, relative, (".csv",), "CSV of source and target text")
    header, _ = _header_and_rows(path)
    columns = {
        k: given.get(k, d) for k, d in (("source_column", "source"), ("target_column", "target"))
    }
    absent = [c for c in columns.values() if c not in header]
    if absent:
        raise DataError(f"{path} has no column {absent[0]!r}: its header is {header}")
    return {"path": entry_path, **columns}


def _detection_csv(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    path, entry_path = _one_file(folder, relative, (".csv",), "annotations CSV")
    header, rows = _header_and_rows(path)
    expected = ["image", "label", "ymin", "xmin", "ymax", "xmax"]
    if header[: len(expected)] != expected:
        raise DataError(f"{path} needs the header {','.join(expected)}; it has {header}")
    images = [path.parent / row[0] for row in rows if row]
    return {"path": entry_path, **_image_settings([p for p in images if p.is_file()] or images)}


def _segmentation_folder(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DataError(f"{folder} needs images/<name> and masks/<name>.png side by side")
    highest = 0
    for path in sorted(masks.glob("*.png"))[:SAMPLE]:
        try:
            with Image.open(path) as mask:
                highest = max(highest, int(np.asarray(mask).max()))
        except (OSError, UnidentifiedImageError):
            raise DataError(f"{path} is not a readable mask; remove or replace it") from None
    classes = ["background", *(f"class_{i}" for i in range(1, max(highest, 1) + 1))]
    return {"path": relative, "classes": classes, **_image_settings(_images(images))}


def _audio_folder(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    # deferred: data.audio is needed only for audio files
    from kerasops.data.audio import audio_files, decode_wav

    files = audio_files(folder)  # DataError for stray files or too few class folders
    rates, longest = collections.Counter(), 0.0
    for path in files[:SAMPLE]:
        samples, rate = decode_wav(path, str(path))
        rates[rate] += 1
        longest = max(longest, len(samples) / rate)
    rate = 16000 if 16000 in rates else rates.most_common(1)[0][0]
    return {"path": relative, "sample_rate": rate, "clip_seconds": max(1.0, round(longest, 2))}


def _text_corpus(folder: Path, relative: str, given: Mapping[str, Any]) -> dict[str, Any]:
    texts = [folder] if folder.is_file() else sorted(folder.rglob("*.txt"))
    if not texts:
        raise DataError(f"{folder} holds no .txt file: a corpus is one or more text files")
    return {"path": relative}


# The sources that read a user's own files, and how each one's keys are inferred.
INFER = {
    "image_folder": _image_folder,
    "text_csv": _text_csv,
    "tabular_csv": _tabular_csv,
    "timeseries_csv": _timeseries_csv,
    "translation_csv": _translation_csv,
    "detection_csv": _detection_csv,
    "segmentation_folder": _segmentation_folder,
    "audio_folder": _audio_folder,
    "text_corpus": _text_corpus,
}
