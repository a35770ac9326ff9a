"""Seeded stratified, random and chronological splits into train, val and test."""

from __future__ import annotations

import numpy as np

from kerasops.data.errors import DataError

SPLITS = ("train", "val", "test")


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices per split, each class divided in the same proportions; sorted within a split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for split, chunk in zip(SPLITS, _cut(members, val_fraction, test_fraction), strict=True):
            parts[split].append(chunk)
    indices = {s: np.sort(np.concatenate(parts[s])) for s in SPLITS}
    _require_nonempty(indices, val_fraction, test_fraction)
    return indices


def random_split(
    count: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Seeded random indices per split (for regression targets); sorted within a split."""
    members = np.random.default_rng(seed).permutation(count)
    chunks = _cut(members, val_fraction, test_fraction)
    indices = {s: np.sort(c) for s, c in zip(SPLITS, chunks, strict=True)}
    _require_nonempty(indices, val_fraction, test_fraction)
    return indices


def _cut(members: np.ndarray, val_fraction: float, test_fraction: float) -> list[np.ndarray]:
    n_test = int(round(len(members) * test_fraction))
    n_val = int(round(len(members) * val_fraction))
    n_train = len(members) - n_val - n_test
    return [members[:n_train], members[n_train : n_train + n_val], members[n_train + n_val :]]


def _require_nonempty(
    indices: dict[str, np.ndarray], val_fraction: float, test_fraction: float
) -> None:
    wanted = {"train": True, "val": val_fraction > 0, "test": test_fraction > 0}
    for split in SPLITS:
        if wanted[split] and len(indices[split]) == 0:
            raise DataError(
                f"too few examples for a non-empty {split} split; "
                "add data or change val_fraction/test_fraction"
            )


def window_series(
    values: np.ndarray, window: int, horizon: int, val_fraction: float, test_fraction: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Chronological (x, y) windows per split: x (N, window, 1), y (N, horizon), float32.

    The series is cut in time into train, val and test periods. A window belongs to the period
    that holds its whole target, so no target crosses a split boundary; its inputs may reach back
    into earlier periods, which is what a forecaster sees in production.
    """
    if len(values) < window + horizon:
        raise DataError(
            f"the series has {len(values)} values, fewer than window + horizon = "
            f"{window + horizon}; use a longer series or a smaller window/horizon"
        )
    periods = series_periods(len(values), val_fraction, test_fraction)
    return {s: _windows(values, window, horizon, *periods[s], split=s) for s in SPLITS}


def series_periods(
    total: int, val_fraction: float, test_fraction: float
) -> dict[str, tuple[int, int]]:
    """The [start, stop) time steps of the train, val and test periods of a series."""
    val_start = total - int(round(total * val_fraction)) - int(round(total * test_fraction))
    test_start = total - int(round(total * test_fraction))
    return {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, total)}


def _windows(
    values: np.ndarray, window: int, horizon: int, start: int, stop: int, split: str
) -> tuple[np.ndarray, np.ndarray]:
    first = max(start, window)  # first target index
    targets = range(first, stop - horizon + 1)
    if start < stop and len(targets) == 0:
        raise DataError(
            f"the {split} period ({stop - start} values) is too short for one window of "
            f"{window} inputs and {horizon} targets; use a longer series or other fractions"
        )
    x = np.array([values[t - window : t] for t in targets], dtype=np.float32)
    y = np.array([values[t : t + horizon] for t in targets], dtype=np.float32)
    return x.reshape(len(targets), window, 1), y.reshape(len(targets), horizon)  # (N, W, 1)
