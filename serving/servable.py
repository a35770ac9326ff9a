"""One loaded SavedModel version: its signatures, input checks, batched execution and warmup."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from kerasops.serving.batching import Batcher
from kerasops.serving.config import BatchingConfig
from kerasops.serving.errors import ServingError, from_tf_error, invalid
from kerasops.serving.shadow import CLIENT_LOAD

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """Signature tensor: numpy dtype (object for strings) and shape (None for free dims)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)


class Signature:
    """A callable signature with its named inputs and outputs."""

    def __init__(
        self,
        name: str,
        function: Any,
        batching: BatchingConfig,
        observe: Any,
        record: Any = None,
    ) -> None:
        self.name = name
        self.record = record  # (signature, inputs, outputs, seconds) of each answered request
        self._function = function
        _, kwargs = function.structured_input_signature
        self.inputs = {key: _spec_info(key, spec) for key, spec in kwargs.items()}
        self.outputs = {
            key: _spec_info(key, spec) for key, spec in function.structured_outputs.items()
        }
        self._flat_order = _flat_order(function, kwargs)
        self.batcher = Batcher(self.run, batching, observe) if batching.enabled else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature on numpy inputs (batch axis first); raise ServingError.
        Inputs that already match the signature's names, dtypes and shapes (what the servers
        checked) go straight to its graph function (`_call_flat`), without the structured
        call's binding and spec checks (a third of a batch-1 call of a small model); any
        other input takes the structured call and its error."""

        try:
            if self._flat_order is not None and self._matches(inputs):
                flat = [tf.constant(inputs[key]) for key in self._flat_order]
                outputs = self._function._call_flat(flat, self._function.captured_inputs)
            else:
                tensors = {key: tf.constant(value) for key, value in inputs.items()}
                outputs = self._function(**tensors)
            return {key: value.numpy() for key, value in outputs.items()}
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status for the caller
            error = from_tf_error(exc)
            if isinstance(exc, tf.errors.InvalidArgumentError):
                error.message = f"{error.message} ({self._describe(inputs)})"
            raise error from None

    def _matches(self, inputs: dict[str, np.ndarray]) -> bool:
        if len(inputs) != len(self.inputs):
            return False
        for key, value in inputs.items():
            spec = self.inputs.get(key)
            if spec is None or value.dtype != spec.dtype or not _fits(value.shape, spec.shape):
                return False
        return True

    def _describe(self, inputs: dict[str, np.ndarray]) -> str:
        """What arrived beside what the signature expects, per input."""
        parts = []
        for key, value in inputs.items():
            spec = self.inputs.get(key)
            want = "?" if spec is None or spec.shape is None else _shape_text(spec.shape)
            dtype = "string" if value.dtype == object else value.dtype.name
            want_dtype = "?" if spec is None else ("string" if spec.is_string else spec.dtype.name)
            parts.append(
                f"input '{key}': got {dtype} {list(value.shape)}, "
                f"signature '{self.name}' expects {want_dtype} {want}"
            )
        return "; ".join(parts)

    async def run_async(
        self, inputs: dict[str, np.ndarray], rows: int, record: bool = True
    ) -> dict[str, np.ndarray]:
        """Run through the dynamic batcher (or in a worker thread when batching is off); with
        `record`, log the answer and mirror it to a shadow (a shadow's own call does not)."""

        started = time.perf_counter()
        if record:
            CLIENT_LOAD.enter()
        try:
            if self.batcher is None:
                outputs = await asyncio.to_thread(self.run, inputs)
            else:
                outputs = await self.batcher.submit(inputs, rows)
        finally:
            if record:
                CLIENT_LOAD.leave()  # before the mirror looks: this request is answered
        if record and self.record is not None:
            # prediction logging and shadow traffic: they queue or schedule, never raise
            self.record(self.name, inputs, outputs, time.perf_counter() - started)
        return outputs

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def _flat_order(function: Any, kwargs: dict[str, Any]) -> list[str] | None:
    """The input names in the order the signature's graph function takes them, or None where
    that order cannot be told for sure (then every call is structured). The placeholders of a
    signature are named after its inputs; other functions get tf.nest's order (by name), the
    structured call's own, when each placeholder's dtype and shape fit it."""
    if not hasattr(function, "_call_flat") or not hasattr(function, "captured_inputs"):
        return None
    try:
        placeholders = function.inputs[: len(function.inputs) - len(function.captured_inputs)]
        names = [tensor.name.split(":")[0] for tensor in placeholders]
        order = (
            names if sorted(names) == sorted(kwargs) else tf.nest.flatten({k: k for k in kwargs})
        )
    except Exception:  # noqa: BLE001 - an unusual function: keep the structured call
        return None
    if len(placeholders) != len(order) or any(
        tensor.dtype != kwargs[key].dtype or not tensor.shape.is_compatible_with(kwargs[key].shape)
        for tensor, key in zip(placeholders, order, strict=True)
    ):
        return None
    return order


def _fits(shape: tuple[int, ...], want: tuple[int | None, ...] | None) -> bool:
    return want is None or (
        len(shape) == len(want)
        and all(w is None or w == g for w, g in zip(want, shape, strict=True))
    )


def _spec_info(key: str, spec: Any) -> TensorSpecInfo:
    dtype = np.dtype(object) if spec.dtype.name == "string" else np.dtype(spec.dtype.as_numpy_dtype)
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorSpecInfo(key, dtype, shape)


class Servable:
    """A loaded model version; `signature_defs` is the SignatureDef map from saved_model.pb."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        batching: BatchingConfig,
        observe: Any = None,
        logger: Any = None,
        logging_spec: Any = None,
        mirror: Any = None,
    ) -> None:

        self.name = name
        self.version = version
        self.path = path
        self._loaded = tf.saved_model.load(str(path), tags=["serve"])
        record = None
        if (logger is not None and logging_spec is not None) or mirror is not None:

            def record(signature: str, inputs: dict, outputs: dict, seconds: float) -> None:
                if mirror is not None and mirror(self, signature, inputs, outputs, seconds):
                    return  # mirrored to a shadow: the mirror logs both answers
                spec = logging_spec() if logging_spec is not None else None
                if logger is not None and spec is not None:  # the logging_config now
                    logger.offer(spec, name, version, signature, inputs, outputs)

        self.signatures = {
            key: Signature(key, fn, batching, observe, record)
            for key, fn in self._loaded.signatures.items()
        }
        self.signature_defs = _read_signature_defs(path)

    def signature(self, name: str | None) -> Signature:
        key = name or DEFAULT_SIGNATURE
        signature = self.signatures.get(key)
        if signature is None:
            raise ServingError(
                "FAILED_PRECONDITION",
                f'Serving signature key "{key}" not found. Signatures: '
                + ", ".join(sorted(self.signatures)),
            )
        return signature

    def warmup(self, max_records: int) -> int:
        """Replay `assets.extra/tf_serving_warmup_requests`; return how many ran."""
        path = self.path / "assets.extra" / "tf_serving_warmup_requests"
        if not path.is_file() or max_records == 0:
            return 0

        count = 0
        for record in tf.data.TFRecordDataset(str(path)).take(max_records):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            request = entry.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            self.signature(request.model_spec.signature_name).run(inputs)
            count += 1
        return count

    def close(self) -> None:
        for signature in self.signatures.values():
            signature.close()


def _read_signature_defs(path: Path) -> Any:
    """The SignatureDef map of the `serve` meta graph, exactly as TF Serving reports it."""

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    result = get_model_metadata_pb2.SignatureDefMap()
    for graph in saved.meta_graphs:
        if "serve" in graph.meta_info_def.tags:
            for key, signature_def in graph.signature_def.items():
                result.signature_def[key].CopyFrom(signature_def)
    return result


def to_array(value: Any, spec: TensorSpecInfo, allow_nan: bool) -> np.ndarray:
    """Convert a decoded JSON value to an array of the signature's dtype, or raise 400."""
    try:
        raw = np.asarray(value)
    except ValueError:
        raise invalid(f"input '{spec.name}' is ragged: all rows must have the same shape") from None
    if raw.dtype == object and not spec.is_string:
        raise invalid(f"input '{spec.name}' is ragged or mixes types; expected {spec.dtype.name}")
    return _cast(raw, spec, allow_nan)


def _cast(raw: np.ndarray, spec: TensorSpecInfo, allow_nan: bool) -> np.ndarray:
    kind = raw.dtype.kind
    if spec.is_string:
        if kind not in "USO":
            raise invalid(f"input '{spec.name}' expects strings, got {raw.dtype.name} values")
        return raw.astype(object)
    allowed = "biuf" if spec.dtype.kind in "fc" else ("b" if spec.dtype.kind == "b" else "biu")
    if kind not in allowed or (kind == "b" and spec.dtype.kind != "b"):
        got = "strings" if kind in "USO" else f"{raw.dtype.name} values"
        raise invalid(f"input '{spec.name}' expects {spec.dtype.name}, got {got}")
    array = raw.astype(spec.dtype, copy=False)
    if spec.dtype.kind == "f" and not allow_nan and not np.isfinite(array).all():
        raise invalid(f"input '{spec.name}' contains NaN or infinite values")
    return array


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def check_shape(array: np.ndarray, spec: TensorSpecInfo) -> None:
    """Raise 400 unless `array` fits the signature's shape (batch axis included)."""
    if not _fits(array.shape, spec.shape):
        want = "[" + ", ".join("-1" if d is None else str(d) for d in spec.shape) + "]"
        raise invalid(
            f"input '{spec.name}' has shape {list(array.shape)}, the signature expects {want}"
        )
