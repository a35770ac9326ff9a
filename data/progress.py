"""A progress bar on the terminal for long loops over files (images read, rows written): tqdm on
stderr when it is a terminal, nothing in logs, CI or a pipe."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
MIN_ITEMS = 200  # fewer finish before a bar is worth drawing


def progress(items: Iterable[T], total: int, what: str, unit: str = "it") -> Iterator[T]:
    """`items`, with a bar `what` counting `unit`s per second and the time left."""
    quiet = total < MIN_ITEMS or not sys.stderr.isatty()
    yield from tqdm(items, total=total, desc=what, unit=unit, disable=quiet, leave=False)


def counter(total: int, what: str, unit: str = "it") -> tqdm:
    """A bar advanced by hand (`update(n)` after a batch of n), shown where `progress` shows."""
    quiet = total < MIN_ITEMS or not sys.stderr.isatty()
    return tqdm(total=total, desc=what, unit=unit, disable=quiet, leave=False)
