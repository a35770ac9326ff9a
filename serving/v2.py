"""What the Open Inference Protocol (KServe / Triton "v2") asks of the server, shared by its REST
and gRPC front ends: datatypes, tensors to and from numpy, model metadata, readiness, infer and
the model repository extension. Everything runs on the same ModelManager, signatures, batchers
and version labels as TF Serving's API; errors are ServingErrors (one HTTP / gRPC table).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from kerasops import __version__
from kerasops.serving import api
from kerasops.serving.auth import check_under_roots, reload_roots
from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError, invalid, not_found
from kerasops.serving.manager import ModelManager
from kerasops.serving.repository import ModelEntry, check_model_name, list_models
from kerasops.serving.servable import Servable, Signature, TensorSpecInfo, to_array

SERVER_NAME = "kerasops"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORM = "tensorflow_savedmodel"
SIGNATURE_PARAMETER = "signature_name"  # request parameter choosing a signature (not in v2)

# OIP datatype <-> numpy dtype (BYTES: numpy object arrays of bytes).
DATATYPES = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
_REPOSITORY_STATES = {
    "START": "LOADING",
    "LOADING": "LOADING",
    "AVAILABLE": "READY",
    "UNLOADING": "UNLOADING",
    "END": "UNAVAILABLE",
}


@dataclasses.dataclass(frozen=True)
class InferOutcome:
    """The answer to one infer request: which version answered, and its output arrays."""

    servable: Servable
    outputs: dict[str, np.ndarray]


def datatype_of(dtype: np.dtype) -> str:
    name = _NAMES.get(np.dtype(dtype))
    if name is None:
        raise ServingError("UNIMPLEMENTED", f"numpy dtype {dtype} has no v2 datatype")
    return name


def tensor_metadata(spec: TensorSpecInfo) -> dict[str, Any]:
    shape = [-1] if spec.shape is None else [-1 if d is None else d for d in spec.shape]
    return {"name": spec.name, "datatype": datatype_of(spec.dtype), "shape": shape}


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


def resolve(manager: ModelManager, name: str, version: str | None) -> Servable:
    """The servable for a v2 model name and version string: digits name a version, anything
    else one of the model's version labels (a kerasops extension: `/versions/stable`)."""
    try:
        check_model_name(name)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if not version:
        return manager.resolve(name)
    if version.isdigit():
        return manager.resolve(name, int(version))
    return manager.resolve(name, label=version)


def model_metadata(manager: ModelManager, servable: Servable) -> dict[str, Any]:
    signature = servable.signature(None)
    return {
        "name": servable.name,
        "versions": [str(v) for v in manager.loaded_versions().get(servable.name, [])],
        "platform": PLATFORM,
        "inputs": [tensor_metadata(spec) for spec in signature.inputs.values()],
        "outputs": [tensor_metadata(spec) for spec in signature.outputs.values()],
    }


# -- tensors --------------------------------------------------------------------------------------
def _spec_for(signature: Signature, name: str, datatype: str) -> TensorSpecInfo:
    spec = signature.inputs.get(name)
    if spec is None:
        expected = ", ".join(sorted(signature.inputs))
        raise invalid(
            f"unexpected input '{name}' for signature '{signature.name}'; expected: {expected}"
        )
    if datatype not in DATATYPES:
        raise invalid(f"input '{name}' has unknown datatype {datatype!r}")
    want = datatype_of(spec.dtype)
    if datatype != want:
        raise invalid(f"input '{name}' has datatype {datatype}, the model expects {want}")
    return spec


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise invalid(f"input '{name}': shape must be a list of non-negative integers")
    return tuple(shape)


def array_from_data(
    signature: Signature, name: str, datatype: str, shape: Any, data: Any, allow_nan: bool
) -> np.ndarray:
    """An input given as JSON `data` (flat or nested, row-major) as an array of `shape`."""
    spec = _spec_for(signature, name, datatype)
    dims = _check_shape(name, shape)
    if spec.is_string:
        values = _flat_strings(name, data)
        if len(values) != _count(dims):
            raise _count_error(name, len(values), dims)
        flat = np.empty(len(values), dtype=object)
        flat[:] = values
        return flat.reshape(dims)
    array = to_array(data, spec, allow_nan)
    if datatype == "BOOL" and array.dtype != bool:
        raise invalid(f"input '{name}' has datatype BOOL: give true/false values")
    if array.size != _count(dims):
        raise _count_error(name, array.size, dims)
    return array.reshape(dims)


def array_from_raw(
    signature: Signature, name: str, datatype: str, shape: Any, raw: bytes, allow_nan: bool
) -> np.ndarray:
    """An input sent as raw bytes (binary tensor data, gRPC `raw_input_contents`)."""
    spec = _spec_for(signature, name, datatype)
    dims = _check_shape(name, shape)
    count = _count(dims)
    if spec.is_string:
        return decode_bytes(name, raw, count).reshape(dims)
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise invalid(
            f"input '{name}': {len(raw)} bytes of {datatype} data do not make shape "
            f"{list(dims)} ({count * dtype.itemsize} bytes expected)"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(dims)
    if array.dtype.kind == "f" and not allow_nan and not np.isfinite(array).all():
        raise invalid(f"input '{name}' contains NaN or infinite values")
    return array


def decode_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    """BYTES elements, each a 4-byte little-endian length then its bytes, as an object array."""
    if count * 4 > len(raw):
        raise invalid(f"input '{name}': {len(raw)} bytes cannot hold {count} BYTES elements")
    result = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise invalid(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise invalid(f"input '{name}': BYTES element {i} runs past the end of the data")
        result[i] = raw[offset : offset + size]
        offset += size
    if offset != len(raw):
        raise invalid(f"input '{name}': {len(raw) - offset} bytes left after {count} elements")
    return result


def encode_bytes(array: np.ndarray) -> bytes:
    parts = []
    for value in array.reshape(-1):
        item = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(struct.pack("<I", len(item)))
        parts.append(item)
    return b"".join(parts)


def raw_bytes(array: np.ndarray) -> bytes:
    """An output array as raw v2 binary data (little-endian, row-major)."""
    if array.dtype == object:
        return encode_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _flat_strings(name: str, data: Any) -> list[bytes]:
    out: list[bytes] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item.encode("utf-8"))
        elif isinstance(item, bytes):
            out.append(item)
        else:
            raise invalid(f"input '{name}' has datatype BYTES: give strings, got {item!r:.40}")
    return out


def _count(dims: tuple[int, ...]) -> int:
    return math.prod(dims)  # Python ints: a huge shape cannot wrap around


def _count_error(name: str, got: int, dims: tuple[int, ...]) -> ServingError:
    return invalid(f"input '{name}' has {got} elements; shape {list(dims)} needs {_count(dims)}")


# -- infer ----------------------------------------------------------------------------------------
async def infer(
    servable: Servable,
    signature: Signature,
    inputs: dict[str, np.ndarray],
    requested: list[str],
    config: ServingConfig,
) -> InferOutcome:
    """Run `signature` through its batcher, as v1 Predict does; keep the `requested` outputs."""
    rows = api.check_inputs(signature, inputs, config.max_rows)
    outputs = await signature.run_async(inputs, rows)
    return InferOutcome(servable, api.filter_outputs(outputs, requested))


def signature_of(servable: Servable, parameters: dict[str, Any]) -> Signature:
    name = parameters.get(SIGNATURE_PARAMETER)
    if name is not None and not isinstance(name, str):
        raise invalid(f"parameter '{SIGNATURE_PARAMETER}' must be a string")
    return servable.signature(name)


# -- model repository extension -------------------------------------------------------------------
def repository_index(manager: ModelManager, config: ServingConfig, ready: bool) -> list[dict]:
    """Every configured model (one row per version known) and every unconfigured model folder
    of the repository; with `ready`, only the versions that answer."""
    rows: list[dict[str, Any]] = []
    configured = manager.model_names()
    for name in configured:
        try:
            states = manager.status(name)
        except ServingError:
            states = []
        for state in states:
            row = {"name": name, "version": str(state.version)}
            row["state"] = _REPOSITORY_STATES.get(state.state, "UNAVAILABLE")
            row["reason"] = state.error_message
            rows.append(row)
        if not states:
            rows.append({"name": name, "state": "UNAVAILABLE", "reason": "no version found"})
    for name in list_models(Path(config.model_repository)):
        if name not in configured:
            rows.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
    return [row for row in rows if row["state"] == "READY"] if ready else rows


async def load_model(manager: ModelManager, config: ServingConfig, name: str) -> None:
    """Serve the model folder `name` of the repository (poll it again when already served);
    raise unless a version of it answers afterwards."""
    _check_name(name)
    entries = {entry.name: entry for entry in manager.entries()}
    if name not in entries:
        base = Path(config.model_repository) / name
        check_under_roots(name, base, reload_roots(config))
        if not base.is_dir():
            raise not_found(f"model {name!r} is not in the model repository {base.parent}")
        entries[name] = ModelEntry(name, base, config.version_policy)
    await asyncio.to_thread(manager.reload_config, list(entries.values()))
    if name not in manager.served_names():
        errors = [s.error_message for s in manager.status(name) if s.error_message]
        raise ServingError(
            "FAILED_PRECONDITION",
            f"model {name!r} has no loadable version" + (f": {errors[0]}" if errors else ""),
        )


async def unload_model(manager: ModelManager, name: str) -> None:
    _check_name(name)
    entries = [entry for entry in manager.entries() if entry.name != name]
    if len(entries) == len(manager.entries()):
        raise not_found(f"model {name!r} is not loaded")
    await asyncio.to_thread(manager.reload_config, entries)


def check_repository_parameters(parameters: dict[str, Any]) -> None:
    """Load/unload parameters: `unload_dependents` is accepted (no model here has dependents);
    a `config` override or model files are not (models come from the repository folder)."""
    unsupported = sorted(set(parameters) - {"unload_dependents"})
    if unsupported:
        raise invalid(
            f"load/unload parameters {', '.join(unsupported)} are not supported: models are "
            "read from the model repository folder as exported"
        )


def _check_name(name: str) -> None:
    try:
        check_model_name(name)
    except ValueError as exc:
        raise invalid(str(exc)) from None
