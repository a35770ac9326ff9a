"""Serving errors carry a TF Serving status code, mapped to HTTP and gRPC as TF Serving does."""

from __future__ import annotations

import re
from typing import Any

import grpc
import tensorflow as tf

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request that cannot be answered; `code` is a TF Serving (gRPC) status code name."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)

    def grpc_code(self) -> Any:

        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def from_tf_error(exc: Exception) -> ServingError:
    """Translate an exception raised while running a signature."""

    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, tf.errors.OpError):
        name = {
            "InvalidArgumentError": "INVALID_ARGUMENT",
            "ResourceExhaustedError": "RESOURCE_EXHAUSTED",
            "OutOfRangeError": "OUT_OF_RANGE",
            "FailedPreconditionError": "FAILED_PRECONDITION",
            "UnimplementedError": "UNIMPLEMENTED",
        }.get(type(exc).__name__, "INTERNAL")
        return ServingError(name, root_cause(exc.message))
    if isinstance(exc, ValueError | TypeError):
        return invalid(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")


_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "File ", "[[")
_PARSE_EXAMPLE = [
    (
        re.compile(
            r"Key: (?P<key>[^,]+), Index: (?P<index>\d+)\.\s+Data types don't match\. "
            r"Data type: (?P<got>\w+) but expected type: (?P<want>\w+)"
        ),
        "example {index}: feature '{key}' holds {got} values; the signature expects {want}",
    ),
    (
        re.compile(
            r"Key: (?P<key>[^,]+), Index: (?P<index>\d+)\.\s+Number of (?P<want>\w+) values "
            r"!= expected\.\s+Values size: (?P<got>\d+) but output shape: (?P<shape>\[[^\]]*\])"
        ),
        "example {index}: feature '{key}' holds {got} values; the signature expects {want} "
        "values of shape {shape}",
    ),
]


def root_cause(message: str) -> str:
    """The line of a TensorFlow error that says what was wrong (not "Graph execution error:"
    and the node trace), with tf.Example parsing errors restated as feature, expected, got."""
    lines = [line.strip() for line in message.strip().splitlines()]
    useful = [line for line in lines if line and not line.startswith(_NOISE)]
    cause = re.sub(r"\s*\[Op:[^\]]*\]$", "", useful[-1] if useful else lines[0])
    for pattern, text in _PARSE_EXAMPLE:
        match = pattern.search(cause)
        if match:
            return text.format(**match.groupdict())
    return cause
