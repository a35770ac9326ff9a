"""The resolved config of one training run, built once and handed down to every step.

A run's config comes from, in order: the model family's defaults, its preset (from `--preset`
or `models.<name>.preset`), `models.<name>` in params.yaml, then `--set key=value` overrides.
Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kerasops.config import StrictConfig, parse_override
from kerasops.errors import ConfigError
from kerasops.models import InputSpec, get_family, preset_values
from kerasops.models.training import TrainConfig
from kerasops.pipelines.config.params import ModelSection, Params


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The resolved config of one training run; `to_dict` is what `config.json` holds."""

    model: str
    dataset: str
    preset: str | None
    model_values: dict[str, Any]
    train: TrainConfig

    @property
    def name(self) -> str:
        """`<model>-<dataset>`: the run folder, DVC stage and default served model name."""
        return f"{self.model}-{self.dataset}"

    def model_config(self, inputs: InputSpec) -> StrictConfig:
        """The family's typed config for a dataset's InputSpec."""
        config = get_family(self.model).config
        return config.from_dict({**self.model_values, "inputs": inputs.to_dict()})

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
    """Merge defaults, preset, params.yaml and overrides into a checked RunConfig.

    Raises ConfigError naming a bad key, DataError for an unknown dataset.
    """
    family = get_family(model)
    params.dataset(dataset)  # an unknown dataset fails here, before any work
    section = params.models.get(model) or ModelSection()
    preset = preset or section.preset
    train_values = {**params.train.to_dict(), **section.train}
    model_values = {**preset_values(model, preset), **section.values}

    pairs = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    model_keys = set(family.config.field_names()) - {"inputs"}
    train_keys = set(TrainConfig.field_names())
    for key, value in pairs:
        section_name, _, name = key.rpartition(".")
        if section_name in ("", "model") and name in model_keys:
            model_values[name] = value
        elif section_name in ("", "train") and name in train_keys:
            train_values[name] = value
        else:
            valid = ", ".join(sorted(model_keys | {f"train.{k}" for k in train_keys}))
            raise ConfigError(f"unknown key {key!r} for model {model}; valid keys: {valid}")

    typed = family.config.from_dict(model_values)  # checks every key and type now
    resolved = {k: v for k, v in typed.to_dict().items() if k != "inputs"}
    train = TrainConfig.from_dict(train_values, prefix="train.")
    return RunConfig(model, dataset, preset, resolved, train)
