"""Prediction logging in TF Serving's own format: a model's `logging_config` in models.config
(`log_collector_config { filename_prefix }`, `sampling_config { sampling_rate }`) makes the
server write sampled `PredictionLog` records (request, response, model spec, log metadata) to
TFRecord files, for REST and gRPC alike (every protocol's request reaches the same signature).

Files are `<prefix>-<UTC time>-<n>.tfrecord`, rotated by size and age; a file being written is
`....tfrecord.inprogress`, renamed when it is complete, so a reader (the monitor, TFX's
BulkInferrer or InfraValidator) globbing `*.tfrecord` never reads half a file. A relative
prefix lives under `serving.prediction_log_dir`, and an absolute one must too.

Logging never blocks or fails a request: records wait in a bounded queue; a full queue, a
write error or a writer process that died drops the record and counts it
(`kerasops_serving_prediction_logs_dropped{model, reason}`).

Records are built and written in a writer process, not in the serving process: under load the
server's event loop is GIL-bound, and a writer thread building protobufs there took a third of
the GIL (py-spy, benchmarks/serving/loop.py). A sampled request (the draw comes first) only
queues a tuple of references to the arrays it already has; a sender thread takes them in
batches, flattens each array to (dtype, shape, bytes) and writes the batch as one `marshal`
frame to the writer's pipe (the write releases the GIL). The writer process (started at the
first record) rebuilds the arrays, builds each PredictionLog (numeric tensors straight from the
bytes, `tensor_content`, as `tf.make_tensor_proto` would), writes and rotates the files, and
answers each frame with the counts written and dropped per model, which the serving process's
metrics then show. A writer that exits is restarted at the next batch (at most once a second);
what it had not written is counted as dropped (`writer_exited`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import marshal
import os
import queue
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import types
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
# after a frame's first record the sender waits this long for more before it sends, so frames
# are sent (and answered) about a hundred times a second, not once per request: each send and
# each answer wakes a thread that takes the serving process's GIL from the request path
LINGER_S = 0.01
RESTART_S = 1.0  # a writer process that exited is started again this long after the last start


class _File:
    """One open TFRecord file of a prefix, renamed to its final name when closed."""

    def __init__(self, prefix: Path, sequence: int) -> None:
        # deferred: only the writer process writes files (its record writer, not TensorFlow)
        from tensorflow.python.lib.io import _pywrap_record_io as record_io

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{prefix.name}-{stamp}-{os.getpid()}-{sequence:06d}{SUFFIX}"  # the writer's
        self.path = prefix.with_name(name)
        self.partial = self.path.with_name(self.path.name + IN_PROGRESS)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        # tf.io.TFRecordWriter is this class, less its Python wrapper
        self.writer = record_io.RecordWriter(
            str(self.partial).encode(), record_io.RecordWriterOptions(b"")
        )
        self.opened = time.monotonic()
        self.bytes = 0

    def write(self, record: bytes) -> None:
        self.writer.write(record)
        self.bytes += len(record)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.partial.rename(self.path)


def prefix_path(root: Path, prefix: str) -> Path:
    """The file prefix a `filename_prefix` stands for; raise ValueError outside `root`."""
    path = Path(prefix)
    path = (path if path.is_absolute() else root / path).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"filename_prefix {prefix!r} is outside {root}")
    return path


class _Files:
    """The writer process's open files, one per prefix, rotated by size and age."""

    def __init__(self, root: Path, max_file_bytes: int, max_file_seconds: float) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_file_seconds = max_file_seconds
        self._files: dict[Path, _File] = {}
        self._prefixes: dict[str, Path] = {}  # filename_prefix -> its resolved path
        self._sequence = 0
        self._templates = _Templates()

    def write(self, record: _Record) -> bool:
        """Write one record; False when it was dropped (a write error)."""
        prefix = self.root
        try:
            prefix = self._prefixes.get(record.spec.filename_prefix)
            if prefix is None:
                prefix = prefix_path(self.root, record.spec.filename_prefix)
                self._prefixes[record.spec.filename_prefix] = prefix
            handle = self._files.get(prefix)
            if handle is None:
                self._sequence += 1
                handle = self._files[prefix] = _File(prefix, self._sequence)
            handle.write(self._templates.serialize(record))
            if handle.bytes >= self.max_file_bytes:
                self.close(prefix)
            return True
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the writer
            log.warning("prediction log record dropped: %s", exc)
            self._files.pop(prefix or self.root, None)  # a fresh file next time
            return False

    def flush(self) -> bool:
        """Flush every open file (what is counted as logged is on disk); False on an error
        (those files are dropped: a fresh file next time)."""
        ok = True
        for prefix, handle in list(self._files.items()):
            try:
                handle.flush()
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop the writer
                log.warning("prediction log %s not flushed: %s", handle.partial, exc)
                self._files.pop(prefix, None)
                ok = False
        return ok

    def rotate_old(self) -> None:
        now = time.monotonic()
        for prefix, handle in list(self._files.items()):
            if now - handle.opened >= self.max_file_seconds:
                self.close(prefix)

    def close(self, prefix: Path) -> None:
        handle = self._files.pop(prefix)
        try:
            handle.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("prediction log %s not closed: %s", handle.partial, exc)

    def close_all(self) -> None:
        for prefix in list(self._files):
            self.close(prefix)


# -- the frames of the pipe to the writer process ----------------------------------------------

_HEADER = struct.Struct("<I")  # a frame's length; 0 asks the writer to finish
_RAW = "="  # an array sent as (dtype, shape, bytes); other values as their TensorProto
_STRINGS = "s"  # a string array sent as ("", shape, [bytes, ...]): its proto is built by the writer
_BUILT = "t"
MAX_FRAME_BYTES = 8 * 1024 * 1024  # array bytes per frame, beyond its first record


def _flat(arrays: dict[str, Any]) -> tuple:
    """(key, kind, dtype, shape, data) per array: a numeric array that `_fill_tensor` writes
    from its bytes as those bytes (C order), a string array as the list of its elements' bytes
    (the writer process builds its proto), any other value as its TensorProto, built here."""
    items: list = []
    for key, value in arrays.items():
        if _raw(value):
            items += (key, _RAW, value.dtype.str, value.shape, value.tobytes())
        elif (strings := _string_elements(value)) is not None:
            items += (key, _STRINGS, "", value.shape, strings)
        else:
            import tensorflow as tf  # deferred: loaded already wherever a server answers

            items += (key, _BUILT, "", (), tf.make_tensor_proto(value).SerializeToString())
    return tuple(items)


def _unflat(items: tuple) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for i in range(0, len(items), 5):
        key, kind, dtype, shape, data = items[i : i + 5]
        if kind == _RAW:
            arrays[key] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
        elif kind == _STRINGS:
            arrays[key] = _Strings(tuple(shape), data)
        else:
            arrays[key] = _Built(data)
    return arrays


def _string_elements(value: Any) -> list[bytes] | None:
    """A string array's elements in C order as bytes (str as UTF-8), as `tf.make_tensor_proto`
    writes them into `string_val`; None for anything else (numbers, mixed objects)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "OSU":
        return None
    elements = value.ravel().tolist()
    if value.dtype.kind == "S":
        return elements
    if value.dtype.kind == "U":
        return [e.encode() for e in elements]
    if all(type(e) is bytes for e in elements):
        return elements
    if all(isinstance(e, str | bytes) for e in elements):
        return [e.encode() if isinstance(e, str) else bytes(e) for e in elements]
    return None


def encode_frame(batch: list[_Record]) -> bytes:
    """One frame of the pipe: a batch of records, their arrays as bytes."""
    return marshal.dumps(
        [
            (
                r.spec.filename_prefix,
                r.spec.sampling_rate,
                r.model,
                r.version,
                r.signature,
                r.origin,
                _flat(r.inputs),
                _flat(r.outputs),
            )
            for r in batch
        ]  # fmt: skip
    )


def decode_frame(frame: bytes) -> list[_Record]:
    records = []
    specs: dict[tuple[str, float], LoggingSpec] = {}
    for prefix, rate, model, version, signature, origin, inputs, outputs in marshal.loads(frame):
        spec = specs.get((prefix, rate))
        if spec is None:
            spec = specs[prefix, rate] = LoggingSpec(prefix, rate)
        records.append(
            _Record(spec, model, version, signature, _unflat(inputs), _unflat(outputs), origin)
        )
    return records


def _nbytes(record: _Record) -> int:
    return sum(getattr(v, "nbytes", 0) for d in (record.inputs, record.outputs) for v in d.values())


class PredictionLogger:
    """Samples and queues PredictionLog records, and hands them to a writer process; one per
    server (or batch job)."""

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
        self._random = random.Random()
        self._lock = threading.Lock()
        self._spawn = threading.Lock()  # one writer process starts at a time
        self._sending = 0  # records taken from the queue, not yet in the pipe
        self._in_flight: dict[str, int] = {}  # model -> records sent, not yet answered
        self._process: subprocess.Popen | None = None
        self._acks: threading.Thread | None = None
        self._started = 0.0  # when the writer process was last started (monotonic)
        self._close_timeout = 10.0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def prefix_path(self, prefix: str) -> Path:
        """The file prefix a `filename_prefix` stands for; raise ValueError outside the root."""
        return prefix_path(self.root, prefix)

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
        """Records queued or being written, not yet answered for by the writer (a batch job
        waits on it rather than drop records)."""
        with self._lock:
            return self._queue.qsize() + self._sending + sum(self._in_flight.values())

    def start(self) -> None:
        """Start the writer process now rather than at the first record (a server whose models
        log starts it with them, so the first records wait for no process start)."""
        self._writer()

    def writer_pid(self) -> int | None:
        """The writer process's id while one runs (None before the first record)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, close and publish every file (once; later calls return)."""
        if not self._thread.is_alive():
            return
        self._close_timeout = timeout
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue  # the writer process rotates old files itself
            if first is not None and self._queue.qsize() < BATCH:
                time.sleep(LINGER_S)  # let the frame gather what arrives meanwhile
            batch = [first]
            size = 0 if first is None else _nbytes(first)
            while len(batch) < BATCH and size < MAX_FRAME_BYTES and batch[-1] is not None:
                try:  # what else is queued, without waiting
                    record = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(record)
                size += 0 if record is None else _nbytes(record)
            if batch[-1] is None:
                stop = True
                batch.pop()
            if batch:
                self._send(batch)
        self._finish()

    def _send(self, batch: list[_Record]) -> None:
        with self._lock:
            self._sending = len(batch)
        try:
            frame = encode_frame(batch)
        except Exception as exc:  # noqa: BLE001 - an unencodable value drops its batch
            log.warning("prediction log records dropped: %s", exc)
            self._drop_all(batch, "write_error")
            return
        process = self._writer()
        if process is None:
            self._drop_all(batch, "writer_exited")
            return
        with self._lock:
            for record in batch:
                self._in_flight[record.model] = self._in_flight.get(record.model, 0) + 1
            self._sending = 0
        try:
            _write_all(process.stdin.fileno(), _HEADER.pack(len(frame)) + frame)
        except (OSError, ValueError):  # the writer exited: its answers' reader counts the loss
            self._stop_writer(process)

    def _drop_all(self, batch: list[_Record], reason: str) -> None:
        with self._lock:
            self._sending = 0
        for record in batch:
            self._dropped(record.model, reason)

    def _writer(self) -> subprocess.Popen | None:
        """The running writer process, started when there is none (at most once a second:
        the sender waits for the next start, while requests go on queueing)."""
        with self._spawn:
            return self._start_writer()

    def _start_writer(self) -> subprocess.Popen | None:
        process = self._process
        if process is not None and process.poll() is None:
            return process
        if process is not None:
            self._stop_writer(process)
        since = time.monotonic() - self._started
        if self._started and since < RESTART_S:  # at most one start a second: the sender
            time.sleep(RESTART_S - since)  # waits out the rest, its records kept, not dropped
        self._started = time.monotonic()
        answers, answer_end = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, repr(sys.path), str(self.root),
                 str(self.max_file_bytes), str(self.max_file_seconds), str(answer_end)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(answer_end,),
            )  # fmt: skip
        except OSError as exc:
            log.warning("prediction log writer not started: %s", exc)
            os.close(answers)
            return None
        finally:
            os.close(answer_end)
        self._process = process
        self._acks = threading.Thread(
            target=self._read_answers, args=(answers,), name="prediction-log-acks", daemon=True
        )
        self._acks.start()
        return process

    def _stop_writer(self, process: subprocess.Popen) -> None:
        """End `process` (killed if it still runs) and count what it had not written."""
        with contextlib.suppress(OSError, ValueError):
            process.stdin.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        if self._acks is not None:
            self._acks.join(self._close_timeout)
        if self._process is process:
            self._process = None
        publish_orphans(self.root, process.pid)

    def _read_answers(self, fd: int) -> None:
        """Count what the writer answers for, until it exits; then what it had not answered
        for is dropped."""
        with os.fdopen(fd, "rb") as answers:
            for line in answers:
                try:
                    counts = json.loads(line)
                except ValueError:
                    continue
                for model, n in counts.get("logged", {}).items():
                    self._answered(model, n)
                    if self.metrics is not None:
                        for _ in range(n):
                            self.metrics.prediction_logged(model)
                for model, n in counts.get("dropped", {}).items():
                    self._answered(model, n)
                    for _ in range(n):
                        self._dropped(model, "write_error")
        with self._lock:
            lost, self._in_flight = self._in_flight, {}
        for model, n in lost.items():
            if n:
                log.warning("prediction log writer exited: %d records of %s dropped", n, model)
            for _ in range(n):
                self._dropped(model, "writer_exited")

    def _answered(self, model: str, n: int) -> None:
        with self._lock:
            self._in_flight[model] = self._in_flight.get(model, 0) - n

    def _finish(self) -> None:
        """Ask the writer to write what it has and publish its files; wait for it."""
        process = self._process
        if process is None:
            return
        try:
            _write_all(process.stdin.fileno(), _HEADER.pack(0))
            process.stdin.close()
            process.wait(self._close_timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            log.warning("prediction log writer did not finish: %s", exc)
        self._stop_writer(process)

    def _dropped(self, model: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.prediction_dropped(model, reason)


def publish_orphans(root: Path, pid: int) -> None:
    """Publish the files a writer process left in progress when it ended without closing
    them (killed): they hold the records it flushed (a last record cut short makes the file
    unreadable, which readers skip with a count)."""
    for partial in root.rglob(f"*-{pid}-*{SUFFIX}{IN_PROGRESS}"):
        try:
            partial.rename(partial.with_name(partial.name.removesuffix(IN_PROGRESS)))
        except OSError as exc:
            log.warning("prediction log %s not published: %s", partial, exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- the writer process ------------------------------------------------------------------------

_BOOT = (
    "import ast, sys; sys.path[:0] = ast.literal_eval(sys.argv[1]); "
    "from kerasops.serving.prediction_log import writer_main; writer_main(sys.argv[2:])"
)


def _protobufs_only() -> None:
    """Let this process import TensorFlow's protobuf modules and its record writer without
    running `tensorflow/__init__` (the whole framework: 3 s on an idle machine, a minute under
    load, against 2 s for these): `tensorflow` becomes a bare package of the same folder."""
    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("tensorflow")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["tensorflow"] = package


def writer_main(argv: list[str]) -> None:
    """The writer process: frames from stdin, files under the root, counts to the answer
    pipe after each frame; at a 0-length frame or the end of stdin, publish every file."""
    _protobufs_only()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's own shutdown closes the pipe
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    root, max_bytes, max_seconds, answer_fd = argv
    files = _Files(Path(root), int(max_bytes), float(max_seconds))
    answers = os.fdopen(int(answer_fd), "wb", buffering=0)
    buffer = bytearray()
    try:
        while True:
            need = _HEADER.size
            if len(buffer) >= need:
                (length,) = _HEADER.unpack_from(buffer)
                if length == 0:
                    break
                need += length
            if len(buffer) < need:
                if not select.select([0], [], [], 1.0)[0]:
                    files.rotate_old()
                    continue
                chunk = os.read(0, max(need - len(buffer), 1 << 20))
                if not chunk:
                    break  # the server exited
                buffer += chunk
                continue
            frame = bytes(buffer[_HEADER.size : need])
            del buffer[:need]
            logged: dict[str, int] = {}
            dropped: dict[str, int] = {}
            for record in decode_frame(frame):
                counts = logged if files.write(record) else dropped
                counts[record.model] = counts.get(record.model, 0) + 1
            if not files.flush():  # the frame's records may not be on disk: dropped
                for model, n in logged.items():
                    dropped[model] = dropped.get(model, 0) + n
                logged = {}
            files.rotate_old()
            answers.write((json.dumps({"logged": logged, "dropped": dropped}) + "\n").encode())
    finally:
        files.close_all()
        answers.close()


class _Built(NamedTuple):
    """A serialized TensorProto, built by the serving process (values without raw bytes)."""

    data: bytes


class _Strings(NamedTuple):
    """A string tensor as the serving process sent it: its shape and its elements' bytes."""

    shape: tuple[int, ...]
    values: list[bytes]


def prediction_log(record: _Record) -> Any:
    """The `tensorflow.serving.PredictionLog` of one request (a PredictLog)."""
    # deferred: the writer process builds records; importing this module loads no protobufs
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
        _fill_tensor(request.inputs[key], value)
    for key, value in record.outputs.items():
        _fill_tensor(response.outputs[key], value)
    return entry


class _Templates:
    """Serialized PredictionLogs spliced from templates: the records of one layout (model,
    version, signature, sampling rate, origin, and per tensor its name, dtype and shape, or its
    string values or built proto) differ only in their numeric tensors' `tensor_content`, whose
    lengths the layout fixes, so every other byte of the serialized message is the same. A
    template holds those bytes, split where the contents go; a record of a known layout is the
    join of its pieces and its arrays' bytes, without a message built (the same bytes as
    `prediction_log(record).SerializeToString()`, tested). At most `LIMIT` layouts are kept
    (text inputs make a layout per request); records of the others are built as messages."""

    LIMIT = 256

    def __init__(self) -> None:
        self._pieces: dict[tuple, tuple[bytes, ...] | None] = {}

    def serialize(self, record: _Record) -> bytes:
        layout, contents = _layout(record)
        if layout is None:
            return prediction_log(record).SerializeToString()
        pieces = self._pieces.get(layout, _UNKNOWN)
        if pieces is _UNKNOWN:
            pieces = None  # beyond LIMIT layouts, records are built as messages
            if len(self._pieces) < self.LIMIT:
                pieces = self._pieces[layout] = _template(record)
        if pieces is None:
            return prediction_log(record).SerializeToString()
        joined = [pieces[0]]
        for value, piece in zip(contents, pieces[1:], strict=True):
            joined += (value, piece)  # an array's buffer is its C-order bytes, as tobytes()
        return b"".join(joined)


_UNKNOWN = object()


def _layout(record: _Record) -> tuple[tuple | None, list[np.ndarray]]:
    """`record`'s layout (see _Templates) and its numeric arrays in the order of the message;
    None for a record with a value that only make_tensor_proto writes (never in the writer
    process, which gets those built)."""
    tensors: list = []
    contents = []
    for arrays in (record.inputs, record.outputs):
        for key, value in arrays.items():
            if _raw(value):
                tensors.append((key, value.dtype.str, value.shape))
                contents.append(value if value.flags.c_contiguous else value.tobytes())
            elif isinstance(value, _Strings):
                tensors.append((key, value.shape, tuple(value.values)))
            elif isinstance(value, _Built):
                tensors.append((key, value.data))
            else:
                return None, contents
        tensors.append(None)  # inputs | outputs
    spec = record.spec
    layout = (spec.sampling_rate, record.model, record.version, record.signature, record.origin,
              *tensors)  # fmt: skip
    return layout, contents


def _template(record: _Record) -> tuple[bytes, ...] | None:
    """The pieces of `record`'s layout between its numeric contents, found by serializing the
    record with random contents of the same sizes; None when a content's bytes are not found
    exactly once (a short one may recur by chance)."""
    markers: list[bytes] = []

    def marked(arrays: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in arrays.items():
            if _raw(value):
                marker = os.urandom(value.nbytes)
                markers.append(marker)
                value = np.frombuffer(marker, dtype=value.dtype).reshape(value.shape)
            out[key] = value
        return out

    probe = record._replace(inputs=marked(record.inputs), outputs=marked(record.outputs))
    data = prediction_log(probe).SerializeToString()
    pieces, start = [], 0
    for marker in markers:
        at = data.find(marker, start)
        if at < 0 or data.count(marker) != 1:
            return None
        pieces.append(data[start:at])
        start = at + len(marker)
    pieces.append(data[start:])
    return tuple(pieces)


_CONTENT_DTYPES: dict[np.dtype, int] = {}  # numpy dtype -> DataType enum, for tensor_content


def _content_dtype(dtype: np.dtype) -> int | None:
    """The DataType of a numpy dtype whose tensors `tf.make_tensor_proto` writes as raw bytes
    (`tensor_content`); None for the others (strings, bool, complex: left to it)."""
    if not _CONTENT_DTYPES:
        from tensorflow.core.framework import types_pb2  # deferred: protobufs only

        for name, enum in (
            ("float16", "DT_HALF"), ("float32", "DT_FLOAT"), ("float64", "DT_DOUBLE"),
            ("int8", "DT_INT8"), ("int16", "DT_INT16"), ("int32", "DT_INT32"),
            ("int64", "DT_INT64"), ("uint8", "DT_UINT8"), ("uint32", "DT_UINT32"),
            ("uint64", "DT_UINT64"),
        ):  # fmt: skip
            _CONTENT_DTYPES[np.dtype(name)] = types_pb2.DataType.Value(enum)
    return _CONTENT_DTYPES.get(dtype)


def _raw(value: Any) -> bool:
    """Whether `_fill_tensor` writes `value` from its bytes: a numeric array of more than one
    element in native byte order."""
    return (
        isinstance(value, np.ndarray)
        and value.size > 1
        and value.dtype.isnative
        and _content_dtype(value.dtype) is not None
    )


def _fill_tensor(proto: Any, value: Any) -> None:
    """`proto` := tf.make_tensor_proto(value), the same message; a numeric array of more than
    one element is written directly (dtype, shape, its bytes), as are the string elements the
    serving process sent; the rest by make_tensor_proto (in the serving process: the writer
    process gets those built)."""
    if isinstance(value, _Built):
        proto.ParseFromString(value.data)
        return
    if isinstance(value, _Strings):
        from tensorflow.core.framework import types_pb2  # deferred: protobufs only

        proto.dtype = types_pb2.DT_STRING
        _write_shape(proto, value.shape)
        proto.string_val.extend(value.values)
        return
    if not _raw(value):
        import tensorflow as tf  # deferred: never in the writer process (see _flat)

        proto.CopyFrom(tf.make_tensor_proto(value))
        return
    proto.dtype = _content_dtype(value.dtype)
    _write_shape(proto, value.shape)
    proto.tensor_content = value.tobytes()


def _write_shape(proto: Any, shape: tuple[int, ...]) -> None:
    """`proto.tensor_shape` := `shape`; a scalar's is present and empty, as TF writes it."""
    proto.tensor_shape.SetInParent()
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add().size = size


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
