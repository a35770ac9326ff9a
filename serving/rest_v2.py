"""The Open Inference Protocol (v2) over REST, on the same port as TF Serving's API.

    GET  /v2                                           server metadata
    GET  /v2/health/live, /v2/health/ready             probes (no token needed)
    GET  /v2/models/{name}[/versions/{v}]              model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready        200 ready, 4xx not
    POST /v2/models/{name}[/versions/{v}]/infer        JSON tensors; binary tensor data extension
    POST /v2/repository/index                          model repository extension (control token)
    POST /v2/repository/models/{name}/load | /unload

`{v}` is a version number or one of the model's version labels. Errors are `{"error": "..."}`
with the HTTP status of their code (errors.py), as on the v1 paths.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np
import orjson

from kerasops.serving import v2
from kerasops.serving.auth import Tokens
from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError, invalid
from kerasops.serving.manager import ModelManager
from kerasops.serving.metrics import ServingMetrics
from kerasops.serving.rest import ClientGone, header, parse_json, read_body, respond

log = logging.getLogger(__name__)

PROTOCOL = "rest_v2"
HEADER_LENGTH = b"inference-header-content-length"
_MODEL = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<tail>/ready|/infer)?/?$"
)
_REPOSITORY = re.compile(r"^/v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)/?$")
_OCTETS = (b"content-type", b"application/octet-stream")
_BODY_TYPES = (
    b"application/json",
    b"application/octet-stream",
    b"application/x-www-form-urlencoded",
)


class OipRest:
    """ASGI handler for the /v2 paths, over the same ModelManager as the v1 API."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        config: ServingConfig,
        tokens: Tokens | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.config = config
        self.tokens = tokens or Tokens(config)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        model, verb = "", "other"
        try:
            if path.startswith("/v2/health/"):
                await self._health(send, method, path)
                return
            if path.startswith("/v2/repository/"):
                self.tokens.check_control(header(scope, b"authorization"))
            else:
                self.tokens.check_inference(header(scope, b"authorization"))
            body = b""
            if method == "POST":
                _check_content_type(header(scope, b"content-type"))
                _check_content_encoding(header(scope, b"content-encoding"))
                body = await read_body(scope, receive, self.config.max_body_bytes)
            model, verb, payload, headers = await self._route(scope, method, path, body)
            await respond(send, 200, payload, headers)
            self.metrics.observe(model, verb, PROTOCOL, "OK", time.perf_counter() - started)
        except ServingError as exc:
            await respond(send, exc.http_status, orjson.dumps({"error": exc.message}))
            self.metrics.observe(model, verb, PROTOCOL, exc.code, time.perf_counter() - started)
        except ClientGone:
            return
        except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
            log.exception("unexpected error answering %s %s", method, path)
            await respond(send, 500, orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}))

    async def _health(self, send: Any, method: str, path: str) -> None:
        if method != "GET" or path.rstrip("/") not in ("/v2/health/live", "/v2/health/ready"):
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {path}")
        if path.rstrip("/").endswith("live"):
            await respond(send, 200, b'{"live":true}')
            return
        ready = self.manager.ready()
        await respond(send, 200 if ready else 400, orjson.dumps({"ready": ready}))

    async def _route(
        self, scope: dict, method: str, path: str, body: bytes
    ) -> tuple[str, str, bytes, list[tuple[bytes, bytes]] | None]:
        if path.rstrip("/") == "/v2" and method == "GET":
            return "", "server_metadata", orjson.dumps(v2.server_metadata()), None
        match = _MODEL.match(path)
        if match is not None:
            name, version, tail = match["name"], match["version"], match["tail"] or ""
            if method == "GET" and tail == "":
                servable = v2.resolve(self.manager, name, version)
                metadata = v2.model_metadata(self.manager, servable)
                return name, "model_metadata", orjson.dumps(metadata), None
            if method == "GET" and tail == "/ready":
                v2.resolve(self.manager, name, version)  # 404 unless a version answers
                return name, "model_ready", b'{"ready":true}', None
            if method == "POST" and tail == "/infer":
                payload, headers = await self._infer(scope, body, name, version)
                return name, "infer", payload, headers
        if method == "POST" and path.rstrip("/") == "/v2/repository/index":
            document = parse_json(body, self.config.max_json_depth) if body.strip() else {}
            ready = document.get("ready", False)
            if not isinstance(ready, bool):
                raise invalid("'ready' must be true or false")
            rows = v2.repository_index(self.manager, self.config, ready)
            return "", "repository_index", orjson.dumps(rows), None
        match = _REPOSITORY.match(path)
        if match is not None and method == "POST":
            document = parse_json(body, self.config.max_json_depth) if body.strip() else {}
            v2.check_repository_parameters(_parameters(document.get("parameters"), "request"))
            name, action = match["name"], match["action"]
            if action == "load":
                await v2.load_model(self.manager, self.config, name)
            else:
                await v2.unload_model(self.manager, name)
            return name, f"repository_{action}", b"{}", None
        raise ServingError("NOT_FOUND", f"Malformed request: {method} {path}")

    async def _infer(
        self, scope: dict, body: bytes, name: str, version: str | None
    ) -> tuple[bytes, list[tuple[bytes, bytes]] | None]:
        document, binary = _split_binary(body, header(scope, HEADER_LENGTH))
        document = parse_json(document, self.config.max_json_depth)
        servable = v2.resolve(self.manager, name, version)
        parameters = _parameters(document.get("parameters"), "request")
        signature = v2.signature_of(servable, parameters)
        inputs = self._inputs(
            document.get("inputs"), signature, binary, b"true" in body or b"false" in body
        )
        requested, binary_out = _requested_outputs(document.get("outputs"))
        outcome = await v2.infer(servable, signature, inputs, list(requested), self.config)
        default_binary = parameters.get("binary_data_output") is True
        response: dict[str, Any] = {
            "model_name": servable.name,
            "model_version": str(servable.version),
        }
        if isinstance(document.get("id"), str):
            response["id"] = document["id"]
        outputs, blobs = [], []
        for key, array in outcome.outputs.items():
            entry: dict[str, Any] = {
                "name": key,
                "datatype": v2.datatype_of(array.dtype),
                "shape": list(array.shape),
            }
            data = None if binary_out.get(key, default_binary) else _json_data(array)
            if data is None:
                raw = v2.raw_bytes(array)
                entry["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                entry["data"] = data
            outputs.append(entry)
        response["outputs"] = outputs
        head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        if not blobs:
            return head, None
        length = (b"inference-header-content-length", str(len(head)).encode())
        return b"".join([head, *blobs]), [_OCTETS, length]

    def _inputs(
        self, items: Any, signature: Any, binary: bytes, bools_possible: bool
    ) -> dict[str, np.ndarray]:
        if not isinstance(items, list) or not items:
            raise invalid("'inputs' must be a non-empty list of tensors")
        inputs: dict[str, np.ndarray] = {}
        offset = 0
        for item in items:
            if not isinstance(item, dict):
                raise invalid("each entry of 'inputs' must be an object")
            key, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
            if not isinstance(key, str) or not isinstance(datatype, str):
                raise invalid("each input needs a string 'name' and 'datatype' and a 'shape'")
            if key in inputs:
                raise invalid(f"input '{key}' is given twice")
            size = _parameters(item.get("parameters"), f"input '{key}'").get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise invalid(f"input '{key}': binary_data_size must be an integer >= 0")
                if "data" in item:
                    raise invalid(f"input '{key}' has both 'data' and binary_data_size")
                if offset + size > len(binary):
                    raise invalid(
                        f"input '{key}': binary_data_size {size} runs past the binary data "
                        f"({len(binary) - offset} bytes left)"
                    )
                raw = binary[offset : offset + size]
                offset += size
                array = v2.array_from_raw(
                    signature, key, datatype, shape, raw, self.config.allow_nan
                )
            else:
                if "data" not in item:
                    raise invalid(f"input '{key}' has neither 'data' nor binary_data_size")
                if bools_possible and datatype not in ("BOOL", "BYTES"):
                    _refuse_bools(key, item["data"])
                array = v2.array_from_data(
                    signature, key, datatype, shape, item["data"], self.config.allow_nan
                )
            inputs[key] = array
        if offset != len(binary):
            raise invalid(
                f"{len(binary) - offset} bytes of binary data follow the inputs: the "
                "binary_data_size parameters and Inference-Header-Content-Length disagree"
            )
        return inputs


def _check_content_type(value: bytes | None) -> None:
    if value is None:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media in _BODY_TYPES or (media.startswith(b"application/") and media.endswith(b"+json")):
        return
    raise ServingError(
        "INVALID_ARGUMENT",
        f"unsupported Content-Type {media.decode('latin-1')!r}: send application/json "
        "(or application/octet-stream with Inference-Header-Content-Length)",
        415,
    )


def _check_content_encoding(value: bytes | None) -> None:
    if value is not None and value.strip().lower() not in (b"", b"identity"):
        raise ServingError(
            "INVALID_ARGUMENT",
            f"unsupported Content-Encoding {value.decode('latin-1')!r}: send the body uncompressed",
            415,
        )


def _split_binary(body: bytes, length: bytes | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (Inference-Header-Content-Length)."""
    if length is None:
        return body, b""
    if not length.strip().isdigit() or int(length) > len(body):
        raise invalid(
            f"Inference-Header-Content-Length {length.decode('latin-1')!r} must be an integer "
            f"no larger than the body ({len(body)} bytes)"
        )
    cut = int(length)
    return body[:cut], body[cut:]


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"'parameters' of the {where} must be an object")
    return value


def _requested_outputs(items: Any) -> tuple[dict[str, None], dict[str, bool]]:
    """Requested output names (in order) and, per name, whether it is wanted as binary data."""
    if items is None:
        return {}, {}
    if not isinstance(items, list):
        raise invalid("'outputs' must be a list of {\"name\": ...} objects")
    names: dict[str, None] = {}
    binary: dict[str, bool] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid("each entry of 'outputs' must be an object with a string 'name'")
        parameters = _parameters(item.get("parameters"), f"output '{item['name']}'")
        if parameters.get("classification"):
            raise invalid("the classification extension is not supported: use the v1 :classify")
        names[item["name"]] = None
        if "binary_data" in parameters:
            binary[item["name"]] = parameters["binary_data"] is True
    return names, binary


def _json_data(array: np.ndarray) -> Any:
    """Row-major flat data for JSON; None for BYTES that are not UTF-8 (sent as binary)."""
    flat = array.reshape(-1)
    if array.dtype != object:
        return flat if flat.flags.c_contiguous else np.ascontiguousarray(flat)
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
    except UnicodeDecodeError:
        return None


def _refuse_bools(name: str, data: Any) -> None:
    """400 when a JSON boolean stands where a number is expected (numpy would read 1.0)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if item is True or item is False:
            raise invalid(
                f"input '{name}': a boolean ({str(item).lower()}) where a number is expected"
            )
        if isinstance(item, list):
            stack.extend(item)
