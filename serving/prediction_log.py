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

Cheap by design, since the writer thread shares the GIL with the request path: a request that
is sampled (the draw comes first) only queues a tuple of references to the arrays it already
has; the writer takes records in batches, builds each numeric tensor straight from the array's
bytes (`tensor_content`, as `tf.make_tensor_proto` would, without its per-call checks) and
counts what it wrote after each batch.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

SUFFIX = ".tfrecord"
IN_PROGRESS = ".inprogress"


@dataclasses.dataclass(frozen=True)
class LoggingSpec:
    """A model's `logging_config`: where its records go and the share of requests logged."""

    filename_prefix: str
    sampling_rate: float


class _Record(NamedTuple):
    """One queued request: references to what the request path already holds, nothing built."""

    spec: LoggingSpec
    model: str
    version: int
    signature: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    origin: str = ""  # log_metadata.request_origin (a mirrored request's id and role)


BATCH = 256  # records the writer takes from the queue at a time


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
        # a SimpleQueue (a C deque and a semaphore) costs the request path far less than a
        # Queue's lock and conditions; its bound is kept by `qsize` (approximate by a record
        # or two under races, which is all a bound against runaway memory needs)
        self._queue: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._queue_size = max(queue_size, 1)
        self._writing = 0  # records taken from the queue, not yet written
        self._files: dict[Path, _File] = {}
        self._prefixes: dict[str, Path] = {}  # filename_prefix -> its resolved path
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
        if self._queue.qsize() >= self._queue_size:
            self._dropped(model, "queue_full")
            return
        self._queue.put(_Record(spec, model, version, signature, inputs, outputs, origin))

    def pending(self) -> int:
        """Records queued, not yet written (a batch job waits on it rather than drop records)."""
        return self._queue.qsize() + self._writing

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, close and publish every file (once; later calls return)."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._rotate_old()
                continue
            batch = [first]
            while len(batch) < BATCH:  # what else is queued, without waiting
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None or None in batch:
                stop = True
                batch = batch[: batch.index(None)]
            self._writing = len(batch)
            logged = [record.model for record in batch if self._write(record)]
            self._writing = 0
            if self.metrics is not None:
                for model in logged:  # after the batch: the counter's lock taken in one go
                    self.metrics.prediction_logged(model)
        for prefix in list(self._files):
            self._close(prefix)

    def _write(self, record: _Record) -> bool:
        """Write one record; False when it was dropped (a write error)."""
        prefix = self.root
        try:
            prefix = self._prefixes.get(record.spec.filename_prefix)
            if prefix is None:
                prefix = self.prefix_path(record.spec.filename_prefix)
                self._prefixes[record.spec.filename_prefix] = prefix
            handle = self._files.get(prefix)
            if handle is None:
                self._sequence += 1
                handle = self._files[prefix] = _File(prefix, self._sequence)
            handle.write(prediction_log(record).SerializeToString())
            if handle.bytes >= self.max_file_bytes:
                self._close(prefix)
            return True
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the writer
            log.warning("prediction log record dropped: %s", exc)
            self._dropped(record.model, "write_error")
            self._files.pop(prefix or self.root, None)  # a fresh file next time
            return False

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
        _fill_tensor(request.inputs[key], value, tf)
    for key, value in record.outputs.items():
        _fill_tensor(response.outputs[key], value, tf)
    return entry


_CONTENT_DTYPES: dict[np.dtype, int] = {}  # numpy dtype -> DataType enum, for tensor_content


def _content_dtype(dtype: np.dtype, tf: Any) -> int | None:
    """The DataType of a numpy dtype whose tensors `tf.make_tensor_proto` writes as raw bytes
    (`tensor_content`); None for the others (strings, bool, complex: left to it)."""
    if not _CONTENT_DTYPES:
        for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64"):
            _CONTENT_DTYPES[np.dtype(name)] = tf.as_dtype(name).as_datatype_enum
        for name in ("uint8", "uint32", "uint64"):
            _CONTENT_DTYPES[np.dtype(name)] = tf.as_dtype(name).as_datatype_enum
    return _CONTENT_DTYPES.get(dtype)


def _fill_tensor(proto: Any, value: Any, tf: Any) -> None:
    """`proto` := tf.make_tensor_proto(value), the same message; a numeric array of more than
    one element is written directly (dtype, shape, its bytes), the rest by make_tensor_proto."""
    enum = _content_dtype(value.dtype, tf) if isinstance(value, np.ndarray) else None
    if enum is None or value.size <= 1 or not value.dtype.isnative:
        proto.CopyFrom(tf.make_tensor_proto(value))
        return
    proto.dtype = enum
    dims = proto.tensor_shape.dim
    for size in value.shape:
        dims.add().size = size
    proto.tensor_content = value.tobytes()


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
