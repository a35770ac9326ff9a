"""Serving errors carry a TF Serving status code, mapped to HTTP and gRPC as TF Serving does."""

from __future__ import annotations

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
        return ServingError(name, exc.message.strip().splitlines()[0])
    if isinstance(exc, ValueError | TypeError):
        return invalid(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")
