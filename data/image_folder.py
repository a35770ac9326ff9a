"""An image folder prepared in bounded memory: list, split, then decode/resize/encode in
streaming batches across a process pool, summing the pixel statistics on the way."""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.imaging import EncodedImage, ImageFailure, encode_image, encode_image_task
from kerasops.data.splits import SPLITS, stratified_split

BATCH = 256  # images handed to the pool at once; two batches are in flight
MIN_POOL_IMAGES = 1000  # fewer are encoded in-process: a pool's start-up costs more


@dataclasses.dataclass(frozen=True)
class ImageFolderPlan:
    """An image folder listed and split, not yet decoded: files[split] and labels[split]."""

    folder: Path
    classes: tuple[str, ...]
    files: dict[str, list[Path]]
    labels: dict[str, np.ndarray]  # (N,) int32 class index per file
    image_size: tuple[int, int]
    channels: int
    color_mode: str
    skip_corrupt: bool
    skipped: tuple[Path, ...] = ()  # non-image files left out (with skip_corrupt)

    @property
    def count(self) -> int:
        return sum(len(f) for f in self.files.values())


def plan_image_folder(
    folder: Path,
    files: list[Path],
    image_size: tuple[int, int],
    color_mode: str,
    split_fields: dict,
    skip_corrupt: bool,
) -> ImageFolderPlan:
    """Split `files` (labels = their folder names) stratified; train in a seeded random order,
    so a bounded shuffle buffer over its shards still mixes the classes."""
    names = np.array([p.parent.name for p in files], dtype=str)
    classes = tuple(sorted(set(names.tolist())))
    if len(classes) < 2:
        raise DataError(f"found only the class {classes!r}; a classifier needs at least two")
    y = np.searchsorted(np.array(classes), names).astype(np.int32)  # (N,) class index
    seed = split_fields["seed"]
    indices = stratified_split(y, split_fields["val_fraction"], split_fields["test_fraction"], seed)
    indices["train"] = np.random.default_rng(seed).permutation(indices["train"])
    return ImageFolderPlan(
        folder=folder,
        classes=classes,
        files={s: [files[i] for i in indices[s]] for s in SPLITS},
        labels={s: y[indices[s]] for s in SPLITS},
        image_size=(int(image_size[0]), int(image_size[1])),
        channels=1 if color_mode == "grayscale" else 3,
        color_mode=color_mode,
        skip_corrupt=skip_corrupt,
    )


def encoded_images(
    plan: ImageFolderPlan, pool
) -> Iterator[tuple[str, int, EncodedImage | ImageFailure]]:
    """(split, label, encoded image or failure) for each file of each split, split by split in
    order. On a pool, two batches stay in flight across the splits' boundaries too, so the
    workers go on with the next split while a split's last shard is finished and hashed."""
    splits = [s for s in SPLITS for _ in plan.files[s]]  # (N,) each task's split
    labels = np.concatenate([plan.labels[s] for s in SPLITS]).astype(np.int64)  # (N,)
    tasks = [(str(p), plan.image_size, plan.color_mode) for s in SPLITS for p in plan.files[s]]
    if pool is None:
        for split, label, task in zip(splits, labels, tasks, strict=True):
            yield split, int(label), encode_image(*task)
        return
    pending: collections.deque = collections.deque()
    for start in range(0, len(tasks), BATCH):
        pending.append((start, pool.map_async(encode_image_task, tasks[start : start + BATCH])))
        if len(pending) < 2:
            continue
        yield from _collect(pending.popleft(), splits, labels)
    while pending:
        yield from _collect(pending.popleft(), splits, labels)


def _collect(
    job, splits: list[str], labels: np.ndarray
) -> Iterator[tuple[str, int, EncodedImage | ImageFailure]]:
    start, result = job
    for offset, encoded in enumerate(result.get()):
        yield splits[start + offset], int(labels[start + offset]), encoded


def image_pool(plan: ImageFolderPlan, workers: int | None):
    """A process pool for a large folder on several cores, else None (in-process); its workers
    run PIL and NumPy only, never TensorFlow."""
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or plan.count < MIN_POOL_IMAGES:
        return None
    return pool_context().Pool(workers, initializer=default_termination)


def default_termination() -> None:
    """A worker ends on SIGTERM, whatever handler its parent had (a Prefect flow run installs
    one): `Pool.terminate` signals the workers, then waits for them to end."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pool_context() -> multiprocessing.context.BaseContext:
    """`fork` where this process runs no other Python thread (a fresh `kerasops prepare`, a
    script): quick, and no `__main__` guard needed. `forkserver` where Python threads run
    (Prefect's, a server's, a test session's): a child forked while one of them holds a lock it
    then needs can wait on it forever. Threads of native libraries (TensorFlow's, BLAS') do not
    count: the workers never call into TensorFlow."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["kerasops.data.image_folder"])  # the workers' only import
    return context


@dataclasses.dataclass
class PixelStats:
    """Streaming sums of pixel values: train mean and std, and the largest value anywhere."""

    total: float = 0.0
    total_sq: float = 0.0
    pixels: int = 0
    pixel_max: float = 0.0

    def add(self, image: EncodedImage, train: bool) -> None:
        self.pixel_max = max(self.pixel_max, image.pixel_max)
        if train:
            self.total += image.pixel_sum
            self.total_sq += image.pixel_sum_sq
            self.pixels += image.pixels

    def stats(self) -> dict[str, float]:
        mean = self.total / max(1, self.pixels)
        variance = max(0.0, self.total_sq / max(1, self.pixels) - mean * mean)
        return {
            "pixel_max": float(self.pixel_max),
            "pixel_mean": float(mean),
            "pixel_std": float(np.sqrt(variance)),
        }
