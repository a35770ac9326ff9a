"""Prediction logging in TF Serving's own format: a model's `logging_config` in models.config
(`log_collector_config { filename_prefix }`, `sampling_config { sampling_rate }`) makes the
server write sampled `PredictionLog` records (request, response, model spec, log metadata) to
TFRecord files, for REST and gRPC alike (every protocol's request reaches the same signature).

Files are `<prefix>-<UTC time>-<n>.tfrecord`, rotated by size and age; a file being written is
`....tfrecord.inprogress`, renamed when it is complete, so a reader (the monitor, TFX's
BulkInferrer or InfraValidator) globbing `*.tfrecord` never reads half a file. A relative
prefix lives under `serving.prediction_log_dir`, and an absolute one must too.

Logging never blocks or fails a request: records wait in a bounded queue for one writer thread;
a full queue or a write error drops the record and counts it
(`kerasops_serving_prediction_logs_dropped{model, reason}`).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SUFFIX = ".tfrecord"
IN_PROGRESS = ".inprogress"


@dataclasses.dataclass(frozen=True)
class LoggingSpec:
    """A model's `logging_config`: where its records go and the share of requests logged."""

    filename_prefix: str
    sampling_rate: float


@dataclasses.dataclass
class _Record:
    spec: LoggingSpec
    model: str
    version: int
    signature: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    logged_at: float
    origin: str = ""  # log_metadata.request_origin (a mirrored request's id and role)


class _File:
    """One open TFRecord file of a prefix, renamed to its final name when closed."""

    def __init__(self, prefix: Path, sequence: int) -> None:
        import tensorflow as tf  # deferred: the module is imported by config code too

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = prefix.with_name(f"{prefix.name}-{stamp}-{sequence:06d}{SUFFIX}")
        self.partial = self.path.with_name(self.path.name + IN_PROGRESS)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.writer = tf.io.TFRecordWriter(str(self.partial))
        self.opened = time.monotonic()
        self.bytes = 0

    def write(self, record: bytes) -> None:
        self.writer.write(record)
        self.bytes += len(record)

    def close(self) -> None:
        self.writer.close()
        self.partial.rename(self.path)


class PredictionLogger:
    """Samples, queues and writes PredictionLog records; one per server."""

    def __init__(
        self,
        root: Path,
        metrics: Any = None,
        max_file_bytes: int = 64 * 1024 * 1024,
        max_file_seconds: float = 600.0,
        queue_size: int = 4096,
    ) -> None:
        self.root = root.resolve()
        self.metrics = metrics
        self.max_file_bytes = max_file_bytes
        self.max_file_seconds = max_file_seconds
        self._queue: queue.Queue[_Record | None] = queue.Queue(maxsize=max(queue_size, 1))
        self._files: dict[Path, _File] = {}
        self._sequence = 0
        self._random = random.Random()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def prefix_path(self, prefix: str) -> Path:
        """The file prefix a `filename_prefix` stands for; raise ValueError outside the root."""
        path = Path(prefix)
        path = (path if path.is_absolute() else self.root / path).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"filename_prefix {prefix!r} is outside {self.root}")
        return path

    def offer(
        self,
        spec: LoggingSpec,
        model: str,
        version: int,
        signature: str,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
    ) -> None:
        """Queue one request's record if sampled; never raises, never waits."""
        if spec.sampling_rate <= 0 or self._random.random() >= spec.sampling_rate:
            return
        self.submit(spec, model, version, signature, inputs, outputs)

    def submit(
        self,
        spec: LoggingSpec,
        model: str,
        version: int,
        signature: str,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        origin: str = "",
    ) -> None:
        """Queue one record, sampled already (shadow traffic logs every mirrored request);
        never raises, never waits."""
        record = _Record(spec, model, version, signature, inputs, outputs, time.time(), origin)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped(model, "queue_full")

    def pending(self) -> int:
        """Records queued, not yet written (a batch job waits on it rather than drop records)."""
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, close and publish every file (once; later calls return)."""
        if not self._thread.is_alive():
            return
        self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                record = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._rotate_old()
                continue
            if record is None:
                break
            self._write(record)
        for prefix in list(self._files):
            self._close(prefix)

    def _write(self, record: _Record) -> None:
        prefix = self.root
        try:
            prefix = self.prefix_path(record.spec.filename_prefix)
            handle = self._files.get(prefix)
            if handle is None:
                self._sequence += 1
                handle = self._files[prefix] = _File(prefix, self._sequence)
            handle.write(prediction_log(record).SerializeToString())
            if self.metrics is not None:
                self.metrics.prediction_logged(record.model)
            if handle.bytes >= self.max_file_bytes:
                self._close(prefix)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the writer
            log.warning("prediction log record dropped: %s", exc)
            self._dropped(record.model, "write_error")
            self._files.pop(prefix, None)  # a fresh file next time

    def _rotate_old(self) -> None:
        now = time.monotonic()
        for prefix, handle in list(self._files.items()):
            if now - handle.opened >= self.max_file_seconds:
                self._close(prefix)

    def _close(self, prefix: Path) -> None:
        handle = self._files.pop(prefix)
        try:
            handle.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("prediction log %s not closed: %s", handle.partial, exc)

    def _dropped(self, model: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.prediction_dropped(model, reason)


def prediction_log(record: _Record) -> Any:
    """The `tensorflow.serving.PredictionLog` of one request (a PredictLog)."""
    # deferred: the writer thread builds records; importing this module loads neither
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    metadata = entry.log_metadata
    metadata.model_spec.name = record.model
    metadata.model_spec.version.value = record.version
    metadata.model_spec.signature_name = record.signature
    metadata.sampling_config.sampling_rate = record.spec.sampling_rate
    if record.origin:
        metadata.request_origin = record.origin
    request, response = entry.predict_log.request, entry.predict_log.response
    request.model_spec.CopyFrom(metadata.model_spec)
    response.model_spec.CopyFrom(metadata.model_spec)
    for key, value in record.inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    for key, value in record.outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return entry


def read_prediction_logs(folder: Path, prefix: str = "") -> list[Any]:
    """Every complete PredictionLog under `folder` (files `<prefix>*.tfrecord`), oldest first."""
    files = sorted(p for p in folder.rglob(f"{prefix}*{SUFFIX}") if p.is_file())
    return read_log_files(files)


def read_log_files(files: list[Path]) -> list[Any]:
    """The PredictionLog records of TFRecord files, in order."""
    # deferred: only reading logs needs TensorFlow
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    for raw in tf.data.TFRecordDataset([str(f) for f in files]) if files else []:
        entry = prediction_log_pb2.PredictionLog()
        entry.ParseFromString(raw.numpy())
        records.append(entry)
    return records


def read_readable_log_files(files: list[Path]) -> tuple[list[Any], list[Path]]:
    """The PredictionLog records of the files that read whole, in order, and the files that do
    not (truncated, corrupt, or not PredictionLogs): those are skipped entirely."""
    # deferred: only reading logs needs TensorFlow
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    records: list[Any] = []
    skipped: list[Path] = []
    for path in files:
        try:
            records.extend(read_log_files([path]))
        except (tf.errors.OpError, DecodeError):  # DataLossError: a truncated or corrupt file
            skipped.append(path)
    return records, skipped
