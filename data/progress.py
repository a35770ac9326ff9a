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
    with counter(total, what, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def counter(total: int, what: str, unit: str = "it") -> tqdm:
    """A bar advanced by hand (`update(n)` after a batch of n), drawn only on a terminal and
    for at least MIN_ITEMS items."""
    quiet = total < MIN_ITEMS or not sys.stderr.isatty()
    return tqdm(total=total, desc=what, unit=unit, disable=quiet, leave=False)
