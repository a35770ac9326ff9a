"""A user's tabular or text CSV prepared in bounded memory, in two passes over the file.

The first pass reads the CSV row by row, checks every row and keeps only what the split needs:
a class id per row (4 bytes) and, for text with `drop_duplicates`, a 16-byte digest of its
text. The split is made from those, as the in-memory sources make it (stratified for classes,
random for regression targets, seeded), and kept as one split id per row (1 byte). The second
pass (`CsvPlan.examples`) reads the rows again and hands each to its split, so memory is a
batch of rows plus a few bytes per row, never the file. The rows come in file order; preparation
writes the train split through a seeded external shuffle (data/external_shuffle.py).
"""

from __future__ import annotations

import array
import contextlib
import csv
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.readers import to_number
from kerasops.data.splits import SPLITS, random_split, stratified_split

TEXT_COLUMNS = ("text", "label")
DROPPED = -1  # the split id of a duplicate row that is left out
BATCH = 1024  # rows converted at once in the second pass
Rows = Iterator[tuple[int, list[str]]]  # (row number as the user counts it, its cells)


@dataclasses.dataclass(frozen=True)
class CsvPlan:
    """A CSV checked and split, its rows not held: the split each row goes to.

    `features` are the input columns in order (tabular: every column but the label; text:
    `text`); `row_splits` (N,) int8 holds each data row's index into SPLITS, DROPPED for a
    duplicate text left out.
    """

    path: Path
    kind: Literal["tabular", "text"]
    task: Literal["classification", "regression"]
    features: tuple[str, ...]
    label_column: str
    classes: tuple[str, ...]  # sorted class names; () for regression
    row_splits: np.ndarray
    duplicates_dropped: int | None = None  # None: duplicates are kept

    @property
    def count(self) -> int:
        """Rows that are written (the file's rows less the dropped duplicates)."""
        return int(np.count_nonzero(self.row_splits != DROPPED))

    def examples(self) -> Iterator[tuple[int, Any, float | int]]:
        """(split id, x, target) of each written row, in file order: x a float32 (F,) row or a
        str; the target a class index or a float. Reads the file again, a batch at a time."""
        classes = {name: i for i, name in enumerate(self.classes)}
        with csv_rows(self.path, (*self.features, self.label_column)) as (columns, rows):
            where = [columns[c] for c in self.features]
            label_at = columns[self.label_column]
            batch: list[tuple[int, list[str]]] = []
            read, changed = 0, f"{self.path} changed while it was prepared; prepare it again"
            for read, (_, cells) in enumerate(rows, start=1):
                if read > len(self.row_splits):
                    raise DataError(changed)
                split = int(self.row_splits[read - 1])
                if split != DROPPED:
                    batch.append((split, cells))
                if len(batch) == BATCH:
                    yield from self._converted(batch, where, label_at, classes)
                    batch = []
            if read != len(self.row_splits):
                raise DataError(changed)
            yield from self._converted(batch, where, label_at, classes)

    def _converted(self, batch, where, label_at, classes) -> Iterator[tuple]:
        """A batch's (split id, x, target) triples."""
        if not batch:
            return
        labels = [cells[label_at] for _, cells in batch]
        if self.task == "classification":
            targets = [classes[label] for label in labels]
        else:
            targets = [float(label) for label in labels]  # checked in the first pass
        splits = [split for split, _ in batch]
        if self.kind == "text":
            texts = [cells[where[0]] for _, cells in batch]
            yield from zip(splits, texts, targets, strict=True)
            return
        x = np.array([[float(c[i]) for i in where] for _, c in batch], dtype=np.float32)  # (B, F)
        yield from zip(splits, x, targets, strict=True)


@contextlib.contextmanager
def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[dict[str, int], Rows]]:
    """Open a UTF-8 CSV with a header: ({column name: index}, its data rows one at a time).

    Blank lines are skipped; row numbers count the header as row 1, as the user reads them.
    Raises DataError for a missing file, missing columns, a row with fewer cells than the
    header, text that is not UTF-8 or CSV, and (once the rows are read) no rows at all.
    """
    if not path.is_file():
        raise DataError(f"{path} is not a file; expected a CSV file with a header row")
    csv.field_size_limit(2**31 - 1)  # long articles are single fields
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _read(path, reader, 1) or []
        missing = [c for c in dict.fromkeys(required) if c not in header]
        if missing:
            raise DataError(
                f"{path} lacks the column(s) {', '.join(missing)} "
                f"(found: {', '.join(header) or 'none'}); "
                f"add a header row naming {', '.join(dict.fromkeys(required))}"
            )
        columns = {name: i for i, name in enumerate(header)}  # a repeated name: its last
        yield columns, _data_rows(path, reader, len(header))


def _data_rows(path: Path, reader, width: int) -> Rows:
    number = 1
    while (cells := _read(path, reader, number + 1)) is not None:
        if not cells:
            continue  # a blank line, as csv.DictReader skips it
        number += 1
        if len(cells) < width:
            raise DataError(
                f"{path} row {number} has {len(cells)} of the header's {width} columns; "
                "fill or drop it"
            )
        yield number, cells
    if number == 1:
        raise DataError(f"{path} has a header but no rows; add examples")


def _read(path: Path, reader, number: int) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text (near row {number}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path} row {number} is not valid CSV ({exc}); fix or drop it") from None


def plan_tabular_csv(
    path: Path,
    label_column: str,
    task: Literal["classification", "regression"],
    split_fields: dict[str, Any],
) -> CsvPlan:
    """Check every row of a CSV of numeric features and a label column, and split it."""
    with csv_rows(path, (label_column,)) as (columns, rows):
        features = tuple(c for c in columns if c != label_column)
        if not features:
            raise DataError(f"{path} has no feature columns besides {label_column}; add some")
        where = [(c, columns[c]) for c in features]
        label_at = columns[label_column]
        ids, names, count = array.array("i"), {}, 0
        for number, cells in rows:
            for column, i in where:
                to_number(cells[i], path, number - 2, column)
            if task == "regression":
                to_number(cells[label_at], path, number - 2, label_column)
            else:
                ids.append(names.setdefault(cells[label_at], len(names)))
            count += 1
    if task == "regression":
        indices = random_split(count, *_fractions(split_fields))
        return CsvPlan(
            path, "tabular", task, features, label_column, (), _row_splits(indices, count)
        )
    classes, y = _class_ids(ids, names)
    indices = stratified_split(y, *_fractions(split_fields))
    row_splits = _row_splits(indices, count)
    return CsvPlan(path, "tabular", task, features, label_column, classes, row_splits)


def plan_text_csv(path: Path, drop_duplicates: bool, split_fields: dict[str, Any]) -> CsvPlan:
    """Check every row of a `text,label` CSV, drop repeated texts if asked, and split it
    stratified. A text repeated with another label is an error naming it (with
    `drop_duplicates`): which label is right is the user's call."""
    digests = bytearray()  # (N * 16,) a digest of each row's text
    with csv_rows(path, TEXT_COLUMNS) as (columns, rows):
        text_at, label_at = columns["text"], columns["label"]
        ids, names = array.array("i"), {}
        for number, cells in rows:
            label = cells[label_at]
            if not label.strip():
                raise DataError(f"{path} row {number} has an empty label; give every row a label")
            ids.append(names.setdefault(label, len(names)))
            if drop_duplicates:
                digests += hashlib.blake2b(cells[text_at].encode(), digest_size=16).digest()
    classes, y = _class_ids(ids, names)
    kept = np.arange(len(y))
    if drop_duplicates:
        kept = _first_occurrences(path, digests, y, classes)
    indices = stratified_split(y[kept], *_fractions(split_fields))
    row_splits = _row_splits({s: kept[i] for s, i in indices.items()}, len(y))
    dropped = len(y) - len(kept) if drop_duplicates else None
    return CsvPlan(path, "text", "classification", ("text",), "label", classes, row_splits, dropped)


def _class_ids(ids: array.array, names: dict[str, int]) -> tuple[tuple[str, ...], np.ndarray]:
    """The sorted class names and each row's index among them, (N,) int32."""
    classes = tuple(sorted(names))
    if len(classes) < 2:
        raise DataError(f"found only the class {classes!r}; a classifier needs at least two")
    order = {name: i for i, name in enumerate(classes)}
    sorted_id = np.zeros(len(names), dtype=np.int32)  # first-seen id -> sorted id
    for name, first_seen in names.items():
        sorted_id[first_seen] = order[name]
    return classes, sorted_id[np.frombuffer(ids, dtype=np.intc)]


def _first_occurrences(
    path: Path, digests: bytearray, y: np.ndarray, classes: tuple[str, ...]
) -> np.ndarray:
    """The rows (sorted) whose text has not appeared before; raise DataError at the first row
    in file order that repeats a text with another label."""
    keys = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)  # (N, 2)
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal texts stay in file order
    ordered = keys[order]
    starts = np.ones(len(order), dtype=bool)  # (N,) the first of its text, in sorted order
    starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    del ordered
    firsts = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
    conflicting = y[order] != y[firsts]
    if conflicting.any():
        at = int(np.argmin(np.where(conflicting, order, len(order))))
        row, first = int(order[at]), int(firsts[at])
        text = _text_of_row(path, row)
        raise DataError(
            f"the text {text[:60]!r} appears with labels {classes[y[first]]!r} and "
            f"{classes[y[row]]!r}; fix its label or set drop_duplicates: false"
        )
    return np.sort(order[starts])


def _text_of_row(path: Path, index: int) -> str:
    with csv_rows(path, TEXT_COLUMNS) as (columns, rows):
        for i, (_, cells) in enumerate(rows):
            if i == index:
                return cells[columns["text"]]
    raise AssertionError(f"{path} has no data row {index}")


def _fractions(split_fields: dict[str, Any]) -> tuple[float, float, int]:
    return split_fields["val_fraction"], split_fields["test_fraction"], split_fields["seed"]


def _row_splits(indices: dict[str, np.ndarray], count: int) -> np.ndarray:
    row_splits = np.full(count, DROPPED, dtype=np.int8)  # (N,)
    for split_id, split in enumerate(SPLITS):
        row_splits[indices[split]] = split_id
    return row_splits
