"""TF Serving's REST API (api_rest.md) as a plain ASGI app, plus metrics and health probes.

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model version status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature definitions
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    `instances` or `inputs`
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   `examples` (+ `context`)
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress
    GET  /monitoring/prometheus/metrics (also /metrics), /healthz, /readyz

Errors are `{"error": "..."}` with TF Serving's HTTP status for the error code.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.example import example_pb2

from kerasops.serving import api
from kerasops.serving.auth import Tokens
from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError, invalid
from kerasops.serving.manager import ModelManager
from kerasops.serving.metrics import ServingMetrics
from kerasops.serving.repository import check_model_name
from kerasops.serving.servable import Signature, to_array

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^:]+?)"
    r"(?:/versions/(?P<version>[^/:]+))?(?:/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?/?$"
)
_JSON = (b"content-type", b"application/json")
_BOOLS_POSSIBLE = " bools"  # set on a predict document whose body holds `true` or `false`
_METRICS_PATHS = ("/monitoring/prometheus/metrics", "/metrics")


class BodyTooLarge(ServingError):
    def __init__(self, limit: int) -> None:
        super().__init__("INVALID_ARGUMENT", f"request body exceeds {limit} bytes", 413)


class ClientGone(Exception):
    """The client closed the connection (or was cut off) before its body arrived."""


class RestApp:
    """ASGI application answering TF Serving's REST API from a ModelManager."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        config: ServingConfig,
        tokens: Tokens | None = None,
        v2: Any = None,
    ):
        self.manager = manager
        self.metrics = metrics
        self.config = config
        self.tokens = tokens or Tokens(config)
        self.v2 = v2  # the Open Inference Protocol front end (rest_v2.OipRest) for /v2 paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if self.v2 is not None and (path == "/v2" or path.startswith("/v2/")):
            await self.v2(scope, receive, send)
            return
        started = time.perf_counter()
        model, verb = "", "other"
        try:
            if path.startswith("/v1/models"):
                self.tokens.check_inference(header(scope, b"authorization"))
                body = b""
                if method == "POST":
                    _check_content_type(header(scope, b"content-type"))
                    body = await read_body(scope, receive, self.config.max_body_bytes)
                model, verb, payload = await self._models(method, path, body)
                await respond(send, 200, payload)
                self.metrics.observe(model, verb, "rest", "OK", time.perf_counter() - started)
                return
            await self._service(send, method, path)
        except ServingError as exc:
            await respond(send, exc.http_status, orjson.dumps({"error": exc.message}))
            self.metrics.observe(model, verb, "rest", exc.code, time.perf_counter() - started)
        except ClientGone:
            return
        except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
            log.exception("unexpected error answering %s %s", method, path)
            await respond(send, 500, orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}))

    async def _service(self, send: Any, method: str, path: str) -> None:
        if method == "GET" and path in _METRICS_PATHS:
            body, content_type = self.metrics.render()
            await respond(send, 200, body, [(b"content-type", content_type.encode())])
        elif method == "GET" and path == "/healthz":
            await respond(send, 200, b'{"status": "ok"}')
        elif method == "GET" and path == "/readyz":
            ready = self.manager.ready()
            payload = {"ready": ready, "models": self.manager.loaded_versions()}
            await respond(send, 200 if ready else 503, orjson.dumps(payload))
        else:
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {path}")

    async def _models(self, method: str, path: str, body: bytes) -> tuple[str, str, bytes]:
        match = _ROUTE.match(path)
        if match is None:
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {path}")
        name, tail = match["name"], match["tail"] or ""
        try:
            check_model_name(name)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        version = _version(match["version"])
        label = match["label"]
        if method == "GET" and tail in ("", "/metadata"):
            if tail == "/metadata":
                return name, "metadata", self._metadata(name, version, label)
            return name, "status", self._status(name, version, label)
        if method == "POST" and tail.startswith(":"):
            verb = tail[1:]
            servable = self.manager.resolve(name, version, label)
            handler = {"predict": _predict, "classify": _classify, "regress": _regress}[verb]
            document = parse_json(body, self.config.max_json_depth)
            if verb == "predict" and (b"true" in body or b"false" in body):
                document = {**document, _BOOLS_POSSIBLE: True}
            return name, verb, await handler(servable, document, self.config)
        raise ServingError("NOT_FOUND", f"Malformed request: {method} {path}")

    def _status(self, name: str, version: int | None, label: str | None) -> bytes:
        states = self.manager.status(name, version, label)
        payload: dict[str, Any] = {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state,
                    "status": {"error_code": s.error_code, "error_message": s.error_message},
                }
                for s in states
            ]
        }
        shadow = self.manager.shadow_status(name) if version is None and label is None else None
        if shadow is not None:
            payload["shadow"] = shadow  # kerasops' own field: only for a model with a shadow
        return orjson.dumps(payload)

    def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:

        servable = self.manager.resolve(name, version, label)
        signature_def = json_format.MessageToDict(
            servable.signature_defs, preserving_proto_field_name=True
        )
        return orjson.dumps(
            {
                "model_spec": {
                    "name": name,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": {"signature_def": signature_def},
            }
        )


async def read_body(scope: dict, receive: Any, limit: int) -> bytes:
    """The request body; 413 beyond `limit` bytes (declared or received), ClientGone when the
    client leaves first."""
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge(limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*(headers or [_JSON]), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise invalid(f"version must be a non-negative integer, got {text!r}")
    return int(text)


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _check_content_type(value: bytes | None) -> None:
    """JSON bodies only: `application/json`, `application/*+json`, no header at all, or
    `application/x-www-form-urlencoded`: what `curl -d` sends, as TF Serving's own REST examples
    call it (TF Serving reads the body as JSON whatever the header)."""
    if value is None:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media in (b"application/json", b"application/x-www-form-urlencoded") or (
        media.startswith(b"application/") and media.endswith(b"+json")
    ):
        return
    raise ServingError(
        "INVALID_ARGUMENT",
        f"unsupported Content-Type {media.decode('latin-1')!r}: send application/json",
        415,
    )


def json_depth(body: bytes) -> int:
    """The deepest nesting of `[`/`{` in a JSON text (brackets inside strings not counted)."""
    if b'"' in body:
        body = _STRINGS.sub(b'""', body)
    depth = deepest = 0
    for opened, _closed in _BRACKETS.findall(body):
        if opened:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"([\[{])|([\]}])")


def parse_json(body: bytes, max_depth: int = 64) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if json_depth(body) > max_depth:
            raise invalid(f"JSON Parse error: nested deeper than {max_depth} levels") from None
        try:  # the standard parser also reads NaN and Infinity, as TF Serving's does
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise invalid(f"JSON Parse error: {exc}") from None
    if not isinstance(document, dict):
        raise invalid("JSON Value: the request body must be a JSON object")
    if _deeper_than(document, max_depth):
        raise invalid(f"JSON Parse error: nested deeper than {max_depth} levels")
    return document


def _deeper_than(document: dict[str, Any], max_depth: int) -> bool:
    """True when a value nests deeper than `max_depth` (walks only the first element of each
    list: a tensor's rows share one depth, and a ragged one is refused later anyway)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return True
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list) and value:
            stack.append((value[0], depth + 1))
            if len(value) > 1:
                stack.append((value[-1], depth + 1))
    return False


# -- predict ------------------------------------------------------------------------------------
async def _predict(servable: Any, document: dict[str, Any], config: ServingConfig) -> bytes:
    signature = servable.signature(_signature_name(document))
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise invalid("Not allowed: both 'instances' and 'inputs' are specified; use one")
    if not has_instances and not has_inputs:
        raise invalid("Missing 'instances' or 'inputs' key")
    if has_instances:
        inputs = _decode_rows(document["instances"], signature, config.allow_nan)
    else:
        inputs = _decode_columns(document["inputs"], signature, config.allow_nan)
    if document.get(_BOOLS_POSSIBLE):
        raw = document["instances"] if has_instances else document["inputs"]
        _refuse_bools(raw, signature)
    rows = api.check_inputs(signature, inputs, config.max_rows)
    outputs = await signature.run_async(inputs, rows)
    if has_instances:
        return _dumps({"predictions": _rows_payload(outputs)})
    if len(outputs) == 1:
        return _dumps({"outputs": _jsonable(next(iter(outputs.values())), _first(outputs))})
    return _dumps({"outputs": {k: _jsonable(v, k) for k, v in outputs.items()}})


def _refuse_bools(value: Any, signature: Signature) -> None:
    """400 when a JSON boolean stands where a number is expected (numpy would read 1.0)."""
    numeric = {name for name, spec in signature.inputs.items() if spec.dtype.kind in "iuf"}
    stack = [value] if numeric else []
    while stack:
        item = stack.pop()
        if item is True or item is False:
            raise invalid(
                f"a boolean ({str(item).lower()}) where a number is expected "
                f"(numeric inputs: {', '.join(sorted(numeric))})"
            )
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k in numeric)


def _signature_name(document: dict[str, Any]) -> str | None:
    name = document.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise invalid("'signature_name' must be a string")
    return name


def _decode_rows(instances: Any, signature: Signature, allow_nan: bool) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid("'instances' must be a non-empty list with one entry per example")
    names = list(signature.inputs)
    named = isinstance(instances[0], dict) and "b64" not in instances[0]
    if not named:
        if len(names) != 1:
            raise invalid(f"each instance must be an object with keys {sorted(names)}")
        spec = signature.inputs[names[0]]
        return {names[0]: to_array(_unb64(instances, spec.is_string), spec, allow_nan)}
    columns: dict[str, list[Any]] = {}
    for instance in instances:
        if not isinstance(instance, dict) or set(instance) != set(names):
            raise invalid(f"every instance must be an object with exactly keys {sorted(names)}")
        for key, value in instance.items():
            columns.setdefault(key, []).append(value)
    return {
        key: to_array(
            _unb64(values, signature.inputs[key].is_string), signature.inputs[key], allow_nan
        )
        for key, values in columns.items()
    }


def _decode_columns(inputs: Any, signature: Signature, allow_nan: bool) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    if isinstance(inputs, dict) and "b64" not in inputs:
        mapping = inputs
    elif len(names) == 1:
        mapping = {names[0]: inputs}
    else:
        raise invalid(f"'inputs' must be an object with keys {sorted(names)}")
    result = {}
    for key, value in mapping.items():
        spec = signature.inputs.get(key)
        if spec is None:
            raise invalid(f"unknown input '{key}'; expected: {', '.join(sorted(names))}")
        result[key] = to_array(_unb64(value, spec.is_string), spec, allow_nan)
    return result


def _unb64(value: Any, is_string: bool) -> Any:
    """Replace `{"b64": ...}` objects by their bytes (string inputs only)."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid('a binary value must be an object {"b64": "<base64 string>"}')
        if not is_string:
            raise invalid('{"b64": ...} values are only allowed for string inputs')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise invalid('invalid base64 in a {"b64": ...} value') from None
    if is_string and isinstance(value, list):
        return [_unb64(item, is_string) for item in value]
    if is_string and isinstance(value, str):
        return value.encode("utf-8")
    return value


def _first(outputs: dict[str, np.ndarray]) -> str:
    return next(iter(outputs))


def _rows_payload(outputs: dict[str, np.ndarray]) -> Any:
    if len(outputs) == 1:
        key = _first(outputs)
        return _jsonable(outputs[key], key)
    columns = {key: _jsonable(value, key) for key, value in outputs.items()}
    rows = len(next(iter(outputs.values())))
    return [{key: columns[key][i] for key in columns} for i in range(rows)]


def _jsonable(value: np.ndarray, name: str) -> Any:
    """Numeric arrays go to orjson as they are; strings become text or {"b64": ...}."""
    if value.dtype != object:
        return value if value.flags.c_contiguous else np.ascontiguousarray(value)
    as_b64 = name.endswith("_bytes")
    return _strings(value.tolist(), as_b64)


def _strings(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_strings(item, as_b64) for item in value]
    if isinstance(value, bytes):
        if not as_b64:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


# -- classify / regress -------------------------------------------------------------------------
async def _classify(servable: Any, document: dict[str, Any], config: ServingConfig) -> bytes:
    signature = servable.signature(_signature_name(document))
    api.check_classify_signature(signature)
    outputs = await _run_examples(signature, document, config)
    result = [[[label, score] for label, score in row] for row in api.classifications(outputs)]
    return _dumps({"result": result})


async def _regress(servable: Any, document: dict[str, Any], config: ServingConfig) -> bytes:
    signature = servable.signature(_signature_name(document))
    api.check_regress_signature(signature)
    outputs = await _run_examples(signature, document, config)
    return _dumps({"result": api.regressions(outputs)})


async def _run_examples(
    signature: Signature, document: dict[str, Any], config: ServingConfig
) -> dict[str, np.ndarray]:
    examples = document.get("examples")
    context = document.get("context") or {}
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty list of objects")
    if not isinstance(context, dict):
        raise invalid("'context' must be an object")
    if len(examples) > config.max_rows:
        raise invalid(f"the request holds {len(examples)} examples; at most {config.max_rows}")
    serialized = [_json_example(example, context) for example in examples]
    inputs = api.examples_array(serialized)
    return await signature.run_async(inputs, len(serialized))


def _json_example(example: Any, context: dict[str, Any]) -> bytes:
    """A JSON example (feature name -> value or list of values) as a serialized tf.Example."""

    if not isinstance(example, dict):
        raise invalid("each entry of 'examples' must be an object of features")
    proto = example_pb2.Example()
    for key, value in {**context, **example}.items():
        values = (
            list(np.asarray(value, dtype=object).reshape(-1))
            if isinstance(value, list)
            else [value]
        )
        feature = proto.features.feature[key]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(values)
        elif all(isinstance(v, str | dict) for v in values):
            feature.bytes_list.value.extend(_unb64(v, True) for v in values)
        else:
            raise invalid(f"feature '{key}' mixes types or holds nested values")
    return proto.SerializeToString()
