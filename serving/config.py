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
    version_policy: VersionPolicyConfig = dataclasses.field(default_factory=VersionPolicyConfig)
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)

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

    def at_root(self, root: Path) -> ServingConfig:
        """This config with a relative repository and models.config resolved against `root`
        (the project root: the folder of params.yaml)."""
        return dataclasses.replace(
            self,
            model_repository=str((root / self.model_repository).resolve()),
            models_config=str((root / self.models_config).resolve()),
        )
