"""`params.yaml`, strictly typed, and the resolution of one training run's config.

A run's config comes from, in order: the model family's defaults, its preset (from `--preset`
or `models.<name>.preset`), `models.<name>` in params.yaml, then `--set key=value` overrides.
Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from models import get_family, preset_values
from models.config import ConfigError, StrictConfig, parse_override, require
from pipelines.retraining_config import RetrainingConfig

DEFAULT_PARAMS = Path("params.yaml")


@dataclasses.dataclass(frozen=True)
class TrainConfig(StrictConfig):
    """How a model is fitted.

    Args:
        epochs: maximum epochs; early stopping may end sooner.
        batch_size: examples per step.
        learning_rate: initial learning rate.
        optimizer: adam, adamw or sgd (with momentum 0.9).
        patience: epochs without validation improvement before stopping.
        seed: seeds Python, NumPy and TensorFlow.
        max_tokens: text vocabulary size, taken from the training split.
        sequence_length: tokens kept per text example.
        strategy: `default` (one device), `mirrored` (every local GPU, else every logical
            CPU device) or `multi_worker` (the cluster in `TF_CONFIG`); `batch_size` is per
            replica, the global batch is `batch_size * replicas`.
        mixed_precision: `none`, `mixed_float16` (GPU only) or `mixed_bfloat16`; outputs
            stay float32.
        jit_compile: XLA-compile the train step (`true`/`false`); `auto` is Keras's choice
            (XLA on a GPU without a distribution strategy, off on CPU).
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    patience: int = 5
    seed: int = 42
    max_tokens: int = 20000
    sequence_length: int = 256
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    jit_compile: bool | Literal["auto"] = "auto"

    def validate(self) -> None:
        require(self.epochs >= 0, "train.epochs must be >= 0")
        require(self.batch_size >= 1, "train.batch_size must be >= 1")
        require(self.learning_rate > 0, "train.learning_rate must be positive")
        require(self.patience >= 1, "train.patience must be >= 1")
        require(self.max_tokens >= 10, "train.max_tokens must be >= 10")
        require(self.sequence_length >= 1, "train.sequence_length must be >= 1")


@dataclasses.dataclass(frozen=True)
class TrackingConfig(StrictConfig):
    """Where MLflow records runs.

    Args:
        experiment: MLflow experiment name.
        tracking_uri: empty for the embedded SQLite store under `artifacts/`;
            `MLFLOW_TRACKING_URI` in the environment takes precedence.
    """

    experiment: str = "kerasops"
    tracking_uri: str = ""


@dataclasses.dataclass(frozen=True)
class Paths(StrictConfig):
    """Folders, relative to the project root (the folder holding params.yaml)."""

    artifacts: str = "artifacts"
    raw_data: str = "data/raw"
    prepared_data: str = "data/prepared"


@dataclasses.dataclass(frozen=True)
class Params(StrictConfig):
    """The whole of params.yaml. Sections other components add are kept as plain mappings."""

    paths: Paths = Paths()
    tracking: TrackingConfig = TrackingConfig()
    train: TrainConfig = TrainConfig()
    datasets: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: dict[str, Any] = dataclasses.field(default_factory=dict)
    serving: dict[str, Any] = dataclasses.field(default_factory=dict)
    pipeline: dict[str, Any] = dataclasses.field(default_factory=dict)
    retraining: RetrainingConfig = dataclasses.field(default_factory=RetrainingConfig)
    root: str = "."

    def path(self, name: str) -> Path:
        """An absolute folder from `paths`, resolved against the project root."""
        return (Path(self.root) / getattr(self.paths, name)).resolve()


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read params.yaml (missing file: all defaults); raise ConfigError on any bad key."""
    path = Path(path)
    values: dict[str, Any] = {}
    if path.exists():
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        require(isinstance(values, dict), f"{path} must hold a mapping at the top level")
    require("root" not in values, f"{path}: 'root' is not a params.yaml key")
    params = Params.from_dict(values)
    return params.replace(root=str(path.resolve().parent))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The resolved config of one training run; `to_dict` is what `config.json` holds."""

    model: str
    dataset: str
    preset: str | None
    model_values: dict[str, Any]
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "preset": self.preset,
            "model_config": self.model_values,
            "train": self.train.to_dict(),
        }

    def params_hash(self) -> str:
        """A short, stable hash of the resolved config (lineage)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_run_config(
    params: Params,
    model: str,
    dataset: str,
    preset: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> RunConfig:
    """Merge defaults, preset, params.yaml and overrides into a checked RunConfig."""
    family = get_family(model)
    declared = dict(params.models.get(model) or {})
    require(isinstance(declared, dict), f"params.yaml models.{model} must be a mapping")
    preset = preset or declared.pop("preset", None)
    declared.pop("preset", None)
    train_values = {**params.train.to_dict(), **(declared.pop("train", None) or {})}
    model_values = {**preset_values(model, preset), **declared}

    pairs = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    model_keys = set(family.config.field_names()) - {"inputs"}
    train_keys = set(TrainConfig.field_names())
    for key, value in pairs:
        section, _, name = key.rpartition(".")
        if section in ("", "model") and name in model_keys:
            model_values[name] = value
        elif section in ("", "train") and name in train_keys:
            train_values[name] = value
        else:
            valid = ", ".join(sorted(model_keys | {f"train.{k}" for k in train_keys}))
            raise ConfigError(f"unknown key {key!r} for model {model}; valid keys: {valid}")

    typed = family.config.from_dict(model_values)  # checks every key and type now
    resolved = {k: v for k, v in typed.to_dict().items() if k != "inputs"}
    train = TrainConfig.from_dict(train_values, prefix="train.")
    return RunConfig(model, dataset, preset, resolved, train)
