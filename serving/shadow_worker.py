"""A shadow target in its own process at the lowest CPU priority (`serving.shadow.<model>.process:
true`): the challenger's mirrored calls then take only CPU that the serving process leaves idle
(Linux SCHED_IDLE, else nice 19), and their Python work holds another process's GIL.

The serving process sends each call as one `marshal` frame (its id, the signature, each input as
dtype, shape and bytes) to the worker's stdin through a sender thread (the write releases the
GIL); a reader thread takes the answers from the worker's answer pipe and resolves each call's
future on its event loop. The worker loads the same SavedModel version and answers in order; it
tells when it is ready, and until then (or once it has exited) `call` returns None and the
mirror runs the call in the serving process, as without `process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.serving.errors import ServingError

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<I")
READY = 0  # the worker's first answer: its model is loaded
_BOOT = (
    "import ast, sys; sys.path[:0] = ast.literal_eval(sys.argv[1]); "
    "from kerasops.serving.shadow_worker import worker_main; worker_main(sys.argv[2:])"
)


def flat(arrays: dict[str, Any]) -> tuple:
    """(key, dtype, shape, data) per array: numbers as their bytes, strings as a list."""
    items: list = []
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind in "biufc":
            items += (key, value.dtype.str, value.shape, value.tobytes())
        else:
            items += (key, "", value.shape, value.ravel().tolist())
    return tuple(items)


def unflat(items: tuple) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for i in range(0, len(items), 4):
        key, dtype, shape, data = items[i : i + 4]
        if dtype:
            arrays[key] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
        else:
            values = np.empty(len(data), dtype=object)
            values[:] = data
            arrays[key] = values.reshape(shape)
    return arrays


class ShadowWorker:
    """One shadow version's process; `call` hands it one request."""

    def __init__(self, path: Path, version: int = 0) -> None:
        self.path = path
        self.version = version
        self.started = time.monotonic()
        self.answered = 0  # calls it answered
        self.ready = threading.Event()
        self._calls: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        self._next = READY
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        answers, answer_end = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, repr(sys.path), str(path), str(answer_end)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(answer_end,),
            )  # fmt: skip
        finally:
            os.close(answer_end)
        threading.Thread(target=self._send, name="shadow-send", daemon=True).start()
        self._reader = threading.Thread(
            target=self._read, args=(answers,), name="shadow-answers", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def call(self, signature: str, inputs: dict[str, np.ndarray]) -> asyncio.Future | None:
        """The future of one call's outputs, or None when the worker cannot take it (still
        loading, or exited): the caller answers it another way."""
        if not self.ready.is_set() or not self.alive():
            return None
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._next += 1
            call_id = self._next
            self._calls[call_id] = (loop, future)
        self._outbox.put(marshal.dumps((call_id, signature, flat(inputs))))
        return future

    def close(self) -> None:
        """End the worker (its pending calls fail) and wait for it."""
        self._outbox.put(None)
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join(10)

    def _send(self) -> None:
        stdin = self._process.stdin
        while (frame := self._outbox.get()) is not None:
            try:
                stdin.write(_HEADER.pack(len(frame)) + frame)
                stdin.flush()
            except (OSError, ValueError):
                break  # exited: the reader fails what is pending
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as answers:
            while header := answers.read(_HEADER.size):
                if len(header) < _HEADER.size:
                    break
                frame = answers.read(_HEADER.unpack(header)[0])
                call_id, ok, payload = marshal.loads(frame)
                if call_id == READY:
                    self.ready.set()
                    continue
                with self._lock:
                    loop, future = self._calls.pop(call_id)
                    self.answered += 1
                result = unflat(payload) if ok else ServingError("INTERNAL", payload)
                loop.call_soon_threadsafe(_resolve, future, result)
        with self._lock:
            pending, self._calls = self._calls, {}
        for loop, future in pending.values():
            error = ServingError("UNAVAILABLE", f"the shadow worker of {self.path} exited")
            loop.call_soon_threadsafe(_resolve, future, error)


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def _lowest_priority() -> None:
    """SCHED_IDLE for this process and the threads it starts (TensorFlow's pools), else nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def worker_main(argv: list[str]) -> None:
    """Load the SavedModel `argv[0]`, answer calls from stdin on the answer pipe `argv[1]`."""
    _lowest_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's own shutdown ends it
    path, answer_fd = argv
    import tensorflow as tf  # deferred: only the worker process runs the model here

    loaded = tf.saved_model.load(path, tags=["serve"])
    answers = os.fdopen(int(answer_fd), "wb")
    calls = os.fdopen(0, "rb")

    def answer(call_id: int, ok: bool, payload: Any) -> None:
        frame = marshal.dumps((call_id, ok, payload))
        answers.write(_HEADER.pack(len(frame)) + frame)
        answers.flush()

    answer(READY, True, ())
    while header := calls.read(_HEADER.size):
        if len(header) < _HEADER.size:
            break
        call_id, signature, inputs = marshal.loads(calls.read(_HEADER.unpack(header)[0]))
        try:
            function = loaded.signatures[signature]
            tensors = {k: tf.constant(v) for k, v in unflat(inputs).items()}
            outputs = {k: v.numpy() for k, v in function(**tensors).items()}
            answer(call_id, True, flat(outputs))
        except Exception as exc:  # noqa: BLE001 - reported to the mirror, which counts it
            answer(call_id, False, f"{type(exc).__name__}: {exc}")
