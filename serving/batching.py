"""Dynamic batching: concurrent requests for one signature merged into one call.

Adaptive, so batching never costs a lone client: a request that finds the queue empty and no
batch running runs at once. Batches form under concurrency: requests arriving while a batch runs
queue up and run together next; that batch waits up to `batch_timeout_micros` for more rows only
while requests arrive faster than that timeout (an average of recent gaps), and never past
`max_batch_size` rows.
Only requests whose per-row shapes and dtypes agree are merged. A batch that fails is retried
request by request, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kerasops.serving.config import BatchingConfig
from kerasops.serving.errors import ServingError

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class _Task:
    __slots__ = ("inputs", "rows", "key", "future", "loop", "enqueued", "found_idle")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int, loop: Any, future: Any) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items()))
        self.loop = loop
        self.future = future
        self.enqueued = time.monotonic()
        self.found_idle = False  # queue empty and no batch running when it arrived


class Batcher:
    """Queue of requests for one signature, served by `num_batch_threads` worker threads."""

    def __init__(
        self, run: RunFn, config: BatchingConfig, observe: Callable[[int], None] | None = None
    ) -> None:
        self._run = run
        self._max_rows = config.max_batch_size
        self._timeout = config.batch_timeout_micros / 1e6
        self._max_queued_rows = config.max_enqueued_batches * config.max_batch_size
        self._observe = observe
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._running = 0  # batches executing now
        self._gap = float("inf")  # recent time between arrivals (moving average), seconds
        self._last_arrival = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name="batcher", daemon=True)
            for _ in range(config.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: dict[str, np.ndarray], rows: int) -> asyncio.Future:
        """Queue a request from a running event loop; the future resolves to its outputs."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        task = _Task(inputs, rows, loop, future)
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "the model version is being unloaded")
            if self._queued_rows + rows > self._max_queued_rows:
                raise ServingError(
                    "UNAVAILABLE",
                    "The batch scheduling queue to which this task was submitted is full",
                )
            task.found_idle = not self._queue and self._running == 0
            if self._last_arrival:
                gap = task.enqueued - self._last_arrival
                self._gap = gap if self._gap == float("inf") else 0.8 * self._gap + 0.2 * gap
            self._last_arrival = task.enqueued
            self._queue.append(task)
            self._queued_rows += rows
            # Wake a worker only when it has something new to decide: a first task starts
            # the timeout, a full batch ends it.
            if len(self._queue) == 1 or self._queued_rows >= self._max_rows:
                self._cond.notify()
        return future

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not counting the batch running now)."""
        return self._queued_rows

    def close(self) -> None:
        """Stop accepting requests; queued ones still run before the workers exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                results = self._execute(batch)
            finally:
                with self._cond:  # before delivering: the next request may come right back
                    self._running -= 1
            _deliver(batch, results)

    def _next_batch(self) -> list[_Task] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            head = self._queue[0]
            more_expected = not head.found_idle and self._gap < self._timeout
            deadline = head.enqueued + (self._timeout if more_expected else 0.0)
            while not self._closed and self._queued_rows < self._max_rows and self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._running += 1
            return self._take()

    def _take(self) -> list[_Task]:
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch, rows, skipped = [first], first.rows, []
        while self._queue and rows < self._max_rows:
            task = self._queue.popleft()
            if task.key == first.key and rows + task.rows <= self._max_rows:
                batch.append(task)
                rows += task.rows
            else:
                skipped.append(task)
        self._queue.extendleft(reversed(skipped))
        self._queued_rows -= rows
        return batch

    def _execute(self, batch: list[_Task]) -> list[Any]:
        """One result (outputs or a ServingError) per task of `batch`."""
        if not batch:
            return []
        if self._observe is not None:
            self._observe(sum(task.rows for task in batch))
        if len(batch) == 1:
            results = [self._run_one(batch[0])]
        else:
            try:
                merged = {
                    key: np.concatenate([task.inputs[key] for task in batch])
                    for key in batch[0].inputs
                }
                outputs = self._run(merged)  # one signature call for the whole batch
                results = _split(outputs, [task.rows for task in batch])
            except Exception:  # noqa: BLE001 - retry alone so one bad request fails alone
                results = [self._run_one(task) for task in batch]
        return results

    def _run_one(self, task: _Task) -> Any:
        try:
            return self._run(task.inputs)
        except ServingError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - the worker thread must outlive any request
            return ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")


def _split(outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    results, start = [], 0
    for count in rows:
        results.append({key: value[start : start + count] for key, value in outputs.items()})
        start += count
    return results


def _deliver(batch: list[_Task], results: list[Any]) -> None:
    """Resolve the futures with one thread-safe call per event loop."""
    by_loop: dict[Any, list[tuple[Any, Any]]] = {}
    for task, result in zip(batch, results, strict=True):
        by_loop.setdefault(task.loop, []).append((task.future, result))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[Any, Any]]) -> None:
    for future, result in pairs:
        if future.done():  # the caller went away
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
