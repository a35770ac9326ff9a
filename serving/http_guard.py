"""The REST server's HTTP/1.1 protocol: uvicorn's httptools protocol with deadlines for slow
clients, a connection cap, and JSON bodies for the errors the HTTP layer answers itself.

    connect / request start ── header_timeout_s ──▶ headers done ── body_timeout_s ──▶ body done
    response sent ── idle_timeout_s (uvicorn's keep-alive timeout) ──▶ next request or close
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}


@dataclasses.dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def raw_json_response(status: int, message: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response with body `{"error": message}`."""
    body = orjson.dumps({"error": message})
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def guarded_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """A protocol class for `uvicorn.Config(http=...)` enforcing `limits`."""

    class GuardedHttpProtocol(_Guarded):
        pass

    GuardedHttpProtocol.limits = limits
    return GuardedHttpProtocol


class _Guarded(HttpToolsProtocol):
    limits: Limits
    _deadline: asyncio.TimerHandle | None = None
    _rejected = False

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._rejected = True
            transport.write(raw_json_response(503, "too many connections; retry later"))
            transport.close()
            return
        self._arm(self.limits.header_timeout_s, "request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.send_400_response(str(exc) or "invalid HTTP request")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive request: the header clock starts now
            self._arm(self.limits.header_timeout_s, "request headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._arm(self.limits.body_timeout_s, "request body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self.transport.write(raw_json_response(400, f"malformed HTTP request: {msg}"))
        self.transport.close()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            message = f"{what} not received within {seconds:g} s"
            self.transport.write(raw_json_response(408, message))
        self.transport.close()
