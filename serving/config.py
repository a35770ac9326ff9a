"""Serving settings (ports, batching, limits, version policy): params.yaml `serving:`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from kerasops.config import StrictConfig, require

DEFAULT_REPOSITORY = "artifacts/serving/models"
DEFAULT_MODELS_CONFIG = "artifacts/serving/models.config"


@dataclasses.dataclass(frozen=True)
class BatchingConfig(StrictConfig):
    """Dynamic batching, named like TF Serving's `--batching_parameters_file` fields."""

    enabled: bool = True
    max_batch_size: int = 64
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1

    def validate(self) -> None:
        for key in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            require(getattr(self, key) >= 1, f"serving.batching.{key} must be >= 1")
        timeout_ok = self.batch_timeout_micros >= 0
        require(timeout_ok, "serving.batching.batch_timeout_micros must be >= 0")


@dataclasses.dataclass(frozen=True)
class VersionPolicyConfig(StrictConfig):
    """Which versions to serve: the `latest` N, `all`, or the `specific` ones listed."""

    policy: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def validate(self) -> None:
        require(self.num_versions >= 1, "serving.version_policy.num_versions must be >= 1")
        require(
            self.policy != "specific" or bool(self.versions),
            "serving.version_policy.versions must list at least one version for policy 'specific'",
        )


@dataclasses.dataclass(frozen=True)
class TlsConfig(StrictConfig):
    """TLS on both ports: PEM certificate and key; with `client_ca_file`, mutual TLS (clients
    must present a certificate that CA signed)."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self) -> None:
        require(
            bool(self.cert_file) == bool(self.key_file),
            "serving.tls needs both cert_file and key_file (or neither)",
        )
        require(
            not self.client_ca_file or bool(self.cert_file),
            "serving.tls.client_ca_file needs cert_file and key_file too",
        )


@dataclasses.dataclass(frozen=True)
class ShadowConfig(StrictConfig):
    """Mirror a `fraction` of a model's requests to its version `label` (or `version`); the
    client gets the primary's answer only (serving/shadow.py)."""

    label: str = ""
    version: int = 0
    fraction: float = 0.0
    max_pending: int = 32  # shadow calls running at once; more drawn meanwhile: skipped (busy)
    process: bool = False  # the target answers in its own process at the lowest CPU priority


@dataclasses.dataclass(frozen=True)
class ServingConfig(StrictConfig):
    """Everything the embedded server and the exporter need to know."""

    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    model_repository: str = DEFAULT_REPOSITORY
    models_config: str = DEFAULT_MODELS_CONFIG
    models_config_base_path: str = "/serving/models"  # the repository, as TF Serving sees it
    poll_interval_s: float = 2.0
    max_body_bytes: int = 4 * 1024 * 1024
    allow_nan: bool = False
    warmup: bool = True
    num_warmup_records: int = 8
    shutdown_grace_s: float = 10.0
    # model control (HandleReloadConfigRequest): off unless enabled, then a bearer token
    allow_reload: bool = False
    control_token_env: str = "KERASOPS_CONTROL_TOKEN"  # env var holding the token
    control_token_file: str = ""  # or a file holding it (wins over the env var)
    reload_roots: tuple[str, ...] = ()  # base paths a reload may name, besides model_repository
    # inference auth: off unless one of these names a token
    inference_token_env: str = ""
    inference_token_file: str = ""
    # slow clients and request limits
    header_timeout_s: float = 10.0  # from connect (or request start) to the end of the headers
    body_timeout_s: float = 30.0  # from the end of the headers to the end of the body
    idle_timeout_s: float = 5.0  # keep-alive connection with no request
    max_connections: int = 1024  # concurrent REST connections; gRPC: concurrent RPCs
    max_rows: int = 4096  # examples in one request (400 beyond)
    max_json_depth: int = 64  # nesting of a REST request body (400 beyond)
    # prediction logs of models whose models.config entry has a logging_config
    prediction_log_dir: str = "artifacts/prediction_logs"  # relative filename_prefix root
    prediction_log_max_file_mb: float = 64.0  # a file is closed (published) at this size
    prediction_log_max_file_s: float = 600.0  # or this age
    tls: TlsConfig = dataclasses.field(default_factory=TlsConfig)
    version_policy: VersionPolicyConfig = dataclasses.field(default_factory=VersionPolicyConfig)
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    # shadow traffic: model name -> {label or version, fraction}
    shadow: dict[str, ShadowConfig] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        for key in ("rest_port", "grpc_port"):
            port = getattr(self, key)
            require(0 <= port < 65536, f"serving.{key} must be between 0 and 65535, got {port}")
        require(
            not self.models_config_base_path or self.models_config_base_path.startswith("/"),
            "serving.models_config_base_path must be an absolute path (TF Serving needs one)",
        )
        require(self.poll_interval_s > 0, "serving.poll_interval_s must be > 0")
        require(self.max_body_bytes >= 1024, "serving.max_body_bytes must be >= 1024")
        require(self.num_warmup_records >= 0, "serving.num_warmup_records must be >= 0")
        require(self.shutdown_grace_s >= 0, "serving.shutdown_grace_s must be >= 0")
        for key in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            require(getattr(self, key) > 0, f"serving.{key} must be > 0")
        require(self.prediction_log_max_file_mb > 0, "serving.prediction_log_max_file_mb > 0")
        require(self.prediction_log_max_file_s > 0, "serving.prediction_log_max_file_s > 0")
        for key in ("max_connections", "max_rows", "max_json_depth"):
            require(getattr(self, key) >= 1, f"serving.{key} must be >= 1")
        for name, shadow in self.shadow.items():
            key = f"serving.shadow.{name}"
            require(
                bool(shadow.label) != (shadow.version > 0),
                f"{key} needs a label or a version (>= 1), not both",
            )
            require(0.0 <= shadow.fraction <= 1.0, f"{key}.fraction must be between 0 and 1")
            require(shadow.max_pending >= 1, f"{key}.max_pending must be >= 1")

    def at_root(self, root: Path) -> ServingConfig:
        """This config with a relative repository and models.config resolved against `root`
        (the project root: the folder of params.yaml)."""

        def resolved(path: str) -> str:
            return str((root / path).resolve()) if path else path

        return dataclasses.replace(
            self,
            model_repository=resolved(self.model_repository),
            models_config=resolved(self.models_config),
            prediction_log_dir=resolved(self.prediction_log_dir),
            control_token_file=resolved(self.control_token_file),
            inference_token_file=resolved(self.inference_token_file),
            reload_roots=tuple(resolved(p) for p in self.reload_roots),
            tls=TlsConfig(
                resolved(self.tls.cert_file),
                resolved(self.tls.key_file),
                resolved(self.tls.client_ca_file),
            ),
        )
