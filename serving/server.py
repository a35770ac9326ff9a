"""The embedded TF-Serving-compatible server: REST (uvicorn) and gRPC (grpc.aio) over one
ModelManager, each on its own thread and event loop, sharing the dynamic batchers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import uvicorn

from kerasops.errors import KerasopsError
from kerasops.serving.auth import Tokens
from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError
from kerasops.serving.grpc_service import TensorflowServing, add_services
from kerasops.serving.grpc_v2 import OipGrpc, add_v2_service
from kerasops.serving.http_guard import Limits, guarded_protocol
from kerasops.serving.manager import ModelManager
from kerasops.serving.metrics import ServingMetrics
from kerasops.serving.prediction_log import PredictionLogger
from kerasops.serving.repository import (
    ModelEntry,
    entries_for_repository,
    mapping_for,
    read_models_config,
)
from kerasops.serving.rest import RestApp
from kerasops.serving.rest_v2 import OipRest

log = logging.getLogger(__name__)


class ServerError(KerasopsError):
    """The server cannot start (port taken, nothing to serve)."""


def model_entries(
    config: ServingConfig, models_config: str | None = None, repository: str | None = None
) -> tuple[list[ModelEntry], Path | None]:
    """Entries to serve: an explicit models.config or repository, else the configured
    models.config when it exists, else every model folder of the configured repository.
    With both, the models.config's base paths under `models_config_base_path` are folders of
    `repository` (where `kerasops export --model-repository` put them)."""
    if repository and models_config:
        config = dataclasses.replace(config, model_repository=str(Path(repository).resolve()))
    mapping = mapping_for(config)
    if models_config:
        return read_models_config(Path(models_config), mapping), Path(models_config)
    if repository:
        return entries_for_repository(Path(repository), config.version_policy), None
    if Path(config.models_config).is_file():
        path = Path(config.models_config)
        return read_models_config(path, mapping), path
    return entries_for_repository(Path(config.model_repository), config.version_policy), None


class EmbeddedServer:
    """Start with `start()`, stop with `stop()` (in-flight requests finish first)."""

    def __init__(
        self,
        config: ServingConfig,
        entries: list[ModelEntry],
        models_config_path: Path | None = None,
    ) -> None:
        if not entries:
            raise ServerError("no models to serve: export one with `kerasops export` first")
        self.config = config
        try:
            self.tokens = Tokens(config)
        except ServingError as exc:
            raise ServerError(exc.message) from None
        self.metrics = ServingMetrics()
        self.prediction_logger = PredictionLogger(
            Path(config.prediction_log_dir),
            self.metrics,
            max_file_bytes=int(config.prediction_log_max_file_mb * 1024 * 1024),
            max_file_seconds=config.prediction_log_max_file_s,
        )
        self.manager = ModelManager(
            entries, config, self.metrics, models_config_path, self.prediction_logger
        )
        try:
            self.manager.check_logging(entries)
        except ServingError as exc:
            self.prediction_logger.close()
            raise ServerError(exc.message) from None
        if config.shadow or any(entry.logging is not None for entry in entries):
            self.prediction_logger.start()  # its writer process, while the models load
        self.servicer = TensorflowServing(
            self.manager, self.metrics, config, models_config_path, self.tokens
        )
        self.oip_servicer = OipGrpc(self.manager, self.metrics, config, self.tokens)
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._uvicorn: Any = None
        self._threads: list[threading.Thread] = []
        self._grpc_loop: asyncio.AbstractEventLoop | None = None
        self._grpc_stop: asyncio.Event | None = None
        self._grpc_ready = threading.Event()
        self._grpc_error: BaseException | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Load the models, then open the gRPC and REST ports; raise ServerError on failure."""
        self.manager.poll_once()
        for name, path in self.manager.unservable():
            log.warning("model %s has no loadable version in %s: nothing served for it", name, path)
        self.manager.start_polling()
        try:
            self._start_grpc(timeout)
            self._start_rest(timeout)
        except ServerError:
            self.stop()
            raise
        log.info(
            "serving %s: REST %s://%s:%d, gRPC %s:%d",
            ", ".join(self.manager.served_names()) or "nothing yet",
            "https" if self.config.tls.enabled else "http",
            self.config.host,
            self.rest_port,
            self.config.host,
            self.grpc_port,
        )

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then unload every model."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._grpc_loop is not None and self._grpc_stop is not None:
            self._grpc_loop.call_soon_threadsafe(self._grpc_stop.set)
        for thread in self._threads:
            thread.join(self.config.shutdown_grace_s + 5)
        self.manager.close()
        self.prediction_logger.close()  # what was answered is written and published

    def serve_forever(self) -> None:
        """Start, then block until SIGINT or SIGTERM; shut down gracefully."""
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        self.start()
        scheme = "https" if self.config.tls.enabled else "http"
        print(
            f"serving {', '.join(self.manager.served_names()) or 'nothing yet'}: "
            f"REST {scheme}://{self.config.host}:{self.rest_port}  "
            f"gRPC {self.config.host}:{self.grpc_port}  (Ctrl-C stops)",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        self.stop()

    # -- REST ---------------------------------------------------------------------------------
    def _start_rest(self, timeout: float) -> None:

        sock = _bind(self.config.host, self.config.rest_port, "REST")
        self.rest_port = sock.getsockname()[1]
        v2 = OipRest(self.manager, self.metrics, self.config, self.tokens)
        app = RestApp(self.manager, self.metrics, self.config, self.tokens, v2=v2)
        limits = Limits(
            self.config.header_timeout_s, self.config.body_timeout_s, self.config.max_connections
        )
        tls = self.config.tls
        server_config = uvicorn.Config(
            app,
            http=guarded_protocol(limits),
            timeout_keep_alive=self.config.idle_timeout_s,  # type: ignore[arg-type]
            ssl_certfile=tls.cert_file or None,
            ssl_keyfile=tls.key_file or None,
            ssl_ca_certs=tls.client_ca_file or None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
            log_level="warning",
            log_config=None,  # embedded: leave the process's logging as its entry point set it
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(self.config.shutdown_grace_s) or None,
            backlog=2048,
            proxy_headers=False,  # bound to loopback or behind nothing: skip the middleware
            server_header=False,
        )
        self._uvicorn = uvicorn.Server(server_config)
        thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [sock]}, name="rest", daemon=True
        )
        thread.start()
        self._threads.append(thread)
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(f"the REST server did not start on port {self.rest_port}")
            time.sleep(0.01)

    # -- gRPC ---------------------------------------------------------------------------------
    def _start_grpc(self, timeout: float) -> None:
        thread = threading.Thread(target=self._run_grpc, name="grpc", daemon=True)
        thread.start()
        self._threads.append(thread)
        if not self._grpc_ready.wait(timeout) or self._grpc_error is not None:
            raise ServerError(
                f"the gRPC server did not start on {self.config.host}:{self.config.grpc_port}: "
                f"{self._grpc_error or 'timed out'}"
            )

    def _run_grpc(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._grpc_loop = loop
        try:
            loop.run_until_complete(self._grpc_main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._grpc_error = exc
            self._grpc_ready.set()
        finally:
            loop.close()

    async def _grpc_main(self) -> None:

        limit = self.config.max_body_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_idle_ms", int(self.config.idle_timeout_s * 1000)),
            ],
            maximum_concurrent_rpcs=self.config.max_connections,
        )
        add_services(server, self.servicer)
        add_v2_service(server, self.oip_servicer)
        address = f"{self.config.host}:{self.config.grpc_port}"
        try:
            credentials = _grpc_credentials(self.config)
            if credentials is None:
                self.grpc_port = server.add_insecure_port(address)
            else:
                self.grpc_port = server.add_secure_port(address, credentials)
        except OSError as exc:
            raise ServerError(f"cannot read the TLS files for gRPC: {exc}") from None
        except RuntimeError as exc:
            raise ServerError(f"cannot listen for gRPC on {address}: {exc}") from None
        self._grpc_stop = asyncio.Event()
        await server.start()
        self._grpc_ready.set()
        await self._grpc_stop.wait()
        await server.stop(self.config.shutdown_grace_s)


def _grpc_credentials(config: ServingConfig) -> Any:
    """Server credentials for `serving.tls` (None: plaintext); mutual TLS with a client CA."""
    tls = config.tls
    if not tls.enabled:
        return None
    key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
    client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(config: ServingConfig, models_config: str | None, repository: str | None) -> None:
    """Entry point of `kerasops serve`."""
    if repository:  # the repository served is also the one reloads may name
        config = dataclasses.replace(config, model_repository=str(Path(repository).resolve()))
    entries, config_path = model_entries(config, models_config, repository)
    EmbeddedServer(config, entries, config_path).serve_forever()
