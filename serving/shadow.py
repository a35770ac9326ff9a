"""Shadow traffic: a served model mirrors a share of its requests to another of its versions
(`serving.shadow.<model>: {label: challenger, fraction: 0.1}` in params.yaml).

The client gets the primary's answer only. A mirrored request is answered first; then the same
inputs go to the shadow's signature in a task of the request's event loop, off the request
path: it never delays the answer beyond scheduling and never fails it. Both answers are written
as PredictionLog records to the model's `logging_config` prefix (or `<model>/shadow` without
one), each marked in `log_metadata.request_origin` with the request id, its role (`primary`,
`shadow`) and its signature latency, so `kerasops monitor --compare` can pair them.

Shadow calls rank below client requests: a request drawn for mirroring is skipped as `busy`
when another client request is being answered in the server at that moment (the server is
saturated: a shadow call now would take CPU from a waiting client) or when the model's
`max_pending` shadow calls are still running. Under load the share mirrored falls below
`fraction`; the skips say by how much.

A shadow target that does not answer (a label pointing nowhere, a version not loaded) leaves
the primary answering; the skip is counted (`kerasops_serving_shadow_skipped{model, reason}`)
and shows in the model's status.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.serving.config import ShadowConfig
from kerasops.serving.errors import ServingError
from kerasops.serving.prediction_log import LoggingSpec
from kerasops.serving.shadow_worker import ShadowWorker

log = logging.getLogger(__name__)

ORIGIN = (
    "kerasops-shadow"  # request_origin: kerasops-shadow;request=<id>;role=<role>;latency_ms=<ms>
)
PRIMARY, SHADOW = "primary", "shadow"
RESTART_S = 10.0  # a shadow worker process that exited is started again after this long


class ClientLoad:
    """How many client requests this process is answering now (a shadow's calls are not
    client requests; servable.Signature counts them): a shadow call waits for none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1


CLIENT_LOAD = ClientLoad()  # every server of the process shares its CPUs, so one count


def origin_text(request_id: str, role: str, seconds: float) -> str:
    """The `request_origin` of a mirrored request's record."""
    return f"{ORIGIN};request={request_id};role={role};latency_ms={seconds * 1000:.3f}"


def parse_origin(text: str) -> dict[str, str] | None:
    """The fields of a mirrored record's `request_origin` (request, role, latency_ms); None
    for a record that was not mirrored."""
    parts = text.split(";")
    if not parts or parts[0] != ORIGIN:
        return None
    fields = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    return fields if {"request", "role", "latency_ms"} <= set(fields) else None


def target_text(config: ShadowConfig) -> str:
    return f"label {config.label!r}" if config.label else f"version {config.version}"


class ShadowMirror:
    """Decides, per answered request, whether to mirror it, and runs and logs the shadow call."""

    def __init__(
        self,
        shadows: dict[str, ShadowConfig],
        resolve: Callable[..., Any],
        logger: Any = None,
        logging_spec: Callable[[str], LoggingSpec | None] | None = None,
        metrics: Any = None,
    ) -> None:
        self._shadows = shadows
        self._resolve = resolve
        self._logger = logger
        self._logging_spec = logging_spec or (lambda name: None)
        self._metrics = metrics
        self._random = random.Random()
        self._tasks: set[asyncio.Task] = set()  # strong references until each shadow call ends
        self._lock = threading.Lock()
        self._last_error: dict[str, str] = {}  # model -> why its last mirrored call failed
        self._pending: dict[str, int] = {}  # model -> its shadow calls running now
        self._workers: dict[str, ShadowWorker] = {}  # model -> its shadow version's process

    def configured(self, name: str) -> bool:
        return name in self._shadows

    def __call__(
        self,
        primary: Any,
        signature: str,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        seconds: float,
    ) -> bool:
        """Mirror one answered request if its model has a shadow and the draw says so; True
        when mirrored (both records are then this mirror's to log). Never raises."""
        config = self._shadows.get(primary.name)
        if config is None or config.fraction <= 0 or self._random.random() >= config.fraction:
            return False
        name = primary.name
        try:
            target = self._target(name, config)
            if target.version == primary.version:
                self._skipped(name, "same_version")
                return False
            if not self._admit(name, config):  # a client waits, or enough shadows run
                self._skipped(name, "busy")
                return False
            try:
                request_id = uuid.uuid4().hex
                spec = self._spec(name, config)
                self._log(spec, primary, signature, inputs, outputs, request_id, PRIMARY, seconds)
                worker = self._worker(target) if config.process else None
                call = self._shadow(target, signature, inputs, spec, request_id, worker)
                task = asyncio.get_running_loop().create_task(call)
            except BaseException:
                self._done(name)
                raise
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: self._done(name))
            return True
        except ServingError as exc:  # the target is not loaded (or its label points nowhere)
            self._skipped(name, "not_loaded", exc.message)
            return False
        except Exception as exc:  # noqa: BLE001 - a mirror must never fail the request
            log.warning("shadow of %s not sent: %s", primary.name, exc)
            self._skipped(primary.name, "error", str(exc))
            return False

    def _worker(self, target: Any) -> ShadowWorker | None:
        """The worker process of shadow version `target`, started at its first call (another
        version's worker of the model is ended); a worker that exited is replaced at most once
        every RESTART_S seconds."""
        with self._lock:
            worker = self._workers.get(target.name)
            if worker is not None and worker.version == target.version and worker.alive():
                return worker
            same = worker is not None and worker.version == target.version
            if same and time.monotonic() - worker.started < RESTART_S:
                return None
            if worker is not None:
                threading.Thread(target=worker.close, daemon=True).start()
            try:
                worker = ShadowWorker(Path(target.path), target.version)
            except OSError as exc:
                log.warning("shadow worker of %s not started: %s", target.name, exc)
                self._workers.pop(target.name, None)
                return None
            self._workers[target.name] = worker
            return worker

    def close(self) -> None:
        """End every shadow worker process."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()

    def _admit(self, name: str, config: ShadowConfig) -> bool:
        """Take a place for one shadow call of `name`, unless the server is answering another
        client request now or the model's `max_pending` shadow calls are running."""
        with self._lock:
            pending = self._pending.get(name, 0)
            if CLIENT_LOAD.active > 0 or pending >= config.max_pending:
                return False
            self._pending[name] = pending + 1
            return True

    def _done(self, name: str) -> None:
        with self._lock:
            self._pending[name] -= 1

    def status(self, name: str) -> dict[str, Any] | None:
        """The model's shadow as its status reports it; None without one."""
        config = self._shadows.get(name)
        if config is None:
            return None
        report: dict[str, Any] = {"target": target_text(config), "fraction": config.fraction}
        try:
            report["version"] = str(self._target(name, config).version)
            report["state"] = "AVAILABLE"
        except ServingError as exc:
            report["state"], report["error_message"] = "NOT_LOADED", exc.message
        with self._lock:
            error = self._last_error.get(name)
            worker = self._workers.get(name)
        if config.process:  # its worker process: not started (no call yet), loading, ready
            report["process"] = (
                "not started" if worker is None
                else "exited" if not worker.alive()
                else "ready" if worker.ready.is_set()
                else "loading"
            )  # fmt: skip
        if error and report["state"] == "AVAILABLE":
            report["last_error"] = error
        return report

    def _target(self, name: str, config: ShadowConfig) -> Any:
        if config.label:
            return self._resolve(name, label=config.label)
        return self._resolve(name, version=config.version)

    def _spec(self, name: str, config: ShadowConfig) -> LoggingSpec:
        own = self._logging_spec(name)
        return LoggingSpec(own.filename_prefix if own else f"{name}/shadow", config.fraction)

    async def _shadow(
        self,
        target: Any,
        signature: str,
        inputs: dict[str, np.ndarray],
        spec: LoggingSpec,
        request_id: str,
        worker: ShadowWorker | None = None,
    ) -> None:
        started = time.perf_counter()
        rows = len(next(iter(inputs.values())))
        try:
            answer = worker.call(signature, inputs) if worker is not None else None
            if answer is not None:
                outputs = await answer
            else:  # in this process: no worker asked for, or it is loading or gone
                outputs = await target.signature(signature).run_async(inputs, rows, record=False)
        except Exception as exc:  # noqa: BLE001 - counted and shown in status, never raised
            message = exc.message if isinstance(exc, ServingError) else repr(exc)
            with self._lock:
                self._last_error[target.name] = f"version {target.version}: {message}"
            if self._metrics is not None:
                self._metrics.shadow_answered(target.name, "failed")
            return
        seconds = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.shadow_answered(target.name, "answered", seconds)
        self._log(spec, target, signature, inputs, outputs, request_id, SHADOW, seconds)

    def _log(
        self,
        spec: LoggingSpec,
        servable: Any,
        signature: str,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        request_id: str,
        role: str,
        seconds: float,
    ) -> None:
        if self._logger is None:
            return
        origin = origin_text(request_id, role, seconds)
        self._logger.submit(
            spec, servable.name, servable.version, signature, inputs, outputs, origin
        )

    def _skipped(self, name: str, reason: str, message: str = "") -> None:
        if message:
            with self._lock:
                self._last_error[name] = message
        if self._metrics is not None:
            self._metrics.shadow_skipped(name, reason)
