"""The `tuning:` section of params.yaml: where studies are stored, where trials run, and per
model family the search space, the objective, the sampler and the pruner.

```yaml
tuning:
  storage: ""            # empty: SQLite under artifacts/; or postgresql+psycopg2://...
  scheduler: ""          # empty: a local Dask cluster of --parallel workers; or tcp://host:8786
  cnn:
    objective: val_accuracy
    direction: maximize
    space:
      dropout: {type: float, low: 0.1, high: 0.5}
      train.learning_rate: {type: log_float, low: 1.0e-4, high: 1.0e-2}
```

Space keys are the keys of `kerasops train --set`: a model key (`dropout`, `model.dropout`) or a
train key (`train.learning_rate`); they are stored as `model.<key>` / `train.<key>`, the param
names every training run logs to MLflow.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Self

from kerasops.config import StrictConfig, require
from kerasops.errors import ConfigError
from kerasops.models import get_family
from kerasops.models.training import TrainConfig

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
DIRECTIONS = ("minimize", "maximize")
PARAM_TYPES = ("int", "float", "log_float", "categorical")


@dataclasses.dataclass(frozen=True)
class SpaceParam(StrictConfig):
    """One searched key: `int`, `float` or `log_float` over [low, high] (an optional `step`
    for int and float), or `categorical` over `choices`."""

    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: list[Any] | None = None

    def check(self, key: str) -> None:
        """Raise ConfigError naming `key` for an unknown type or an empty or inverted range."""
        where = f"tuning space {key}"
        if self.type not in PARAM_TYPES:
            raise ConfigError(
                f"{where}: unknown type {self.type!r}; use one of {', '.join(PARAM_TYPES)}"
            )
        if self.type == "categorical":
            require(bool(self.choices), f"{where}: categorical needs a non-empty `choices` list")
            require(self.low is None and self.high is None, f"{where}: categorical takes choices")
            texts = [json.dumps(c, sort_keys=True) for c in self.choices or []]
            require(len(set(texts)) == len(texts), f"{where}: choices repeat a value")
            return
        require(self.low is not None and self.high is not None, f"{where}: needs low and high")
        require(self.choices is None, f"{where}: {self.type} takes low and high, not choices")
        require(
            self.low < self.high,  # type: ignore[operator]
            f"{where}: empty or inverted range [{self.low}, {self.high}]; low must be < high",
        )
        if self.type == "int":
            require(
                float(self.low).is_integer() and float(self.high).is_integer(),  # type: ignore[arg-type]
                f"{where}: int bounds must be whole numbers",
            )
        if self.type == "log_float":
            require(self.low > 0, f"{where}: log_float needs low > 0")  # type: ignore[operator]
            require(self.step is None, f"{where}: log_float takes no step")
        require(self.step is None or self.step > 0, f"{where}: step must be > 0")

    def values_to_check(self) -> list[Any]:
        """The values the space reaches at its edges: each must type-check for the model."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low), int(self.high)]  # type: ignore[arg-type]
        return [float(self.low), float(self.high)]  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class FamilyTuning(StrictConfig):
    """`tuning.<family>`: what one model family's studies search and optimise.

    Args:
        objective: the per-epoch metric a trial is scored and pruned on (`val_loss`,
            `val_accuracy`, ...); a trial's value is its best epoch.
        direction: minimize | maximize.
        sampler: tpe | random (Optuna's samplers), seeded by `seed`.
        pruner: median | percentile | hyperband | successive_halving | none.
        trials: trials of a study, when `--trials` does not say.
        startup_trials: trials finished before the pruner prunes any.
        warmup_epochs: epochs every trial trains before the pruner may stop it (0: it may from
            the first; a slow starter with a lower learning rate is otherwise cut early).
        space: key -> SpaceParam.
    """

    objective: str = "val_loss"
    direction: str = "minimize"
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int = 20
    startup_trials: int = 2
    warmup_epochs: int = 0
    seed: int = 42
    space: dict[str, SpaceParam] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        require(self.direction in DIRECTIONS, f"direction must be one of {DIRECTIONS}")
        require(
            self.sampler in SAMPLERS,
            f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}",
        )
        require(
            self.pruner in PRUNERS,
            f"unknown pruner {self.pruner!r}; use one of {', '.join(PRUNERS)}",
        )
        require(self.trials >= 1, "trials must be >= 1")
        require(self.startup_trials >= 0, "startup_trials must be >= 0")
        require(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        require(bool(self.objective.strip()), "objective must name a metric")

    @classmethod
    def parse(cls, family: str, entry: Any) -> FamilyTuning:
        """Check `tuning.<family>`: its keys, its space's keys against the family's config and
        TrainConfig, and each range."""
        prefix = f"tuning.{family}."
        require(isinstance(entry, Mapping), f"params.yaml tuning.{family} must be a mapping")
        values = dict(entry)
        space = values.pop("space", None) or {}
        require(isinstance(space, Mapping), f"{prefix}space must map keys to ranges")
        for field in ("sampler", "pruner", "direction"):
            if (
                field in values
                and str(values[field])
                not in {
                    "sampler": SAMPLERS,
                    "pruner": PRUNERS,
                    "direction": DIRECTIONS,
                }[field]
            ):
                options = {"sampler": SAMPLERS, "pruner": PRUNERS, "direction": DIRECTIONS}
                raise ConfigError(
                    f"{prefix}{field}: unknown {field} {values[field]!r}; "
                    f"use one of {', '.join(options[field])}"
                )
        typed_space: dict[str, SpaceParam] = {}
        for key, spec in space.items():
            name = canonical_key(family, str(key))
            require(name not in typed_space, f"{prefix}space names {name} twice")
            require(isinstance(spec, Mapping), f"{prefix}space.{key} must be a mapping")
            param = SpaceParam.from_dict(dict(spec), prefix=f"{prefix}space.{key}.")
            param.check(f"{prefix}space.{key}")
            typed_space[name] = param
        try:
            tuning = super().from_dict(values, prefix=prefix)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("for FamilyTuning", f"in tuning.{family}")) from None
        return dataclasses.replace(tuning, space=typed_space)

    def entry(self) -> dict[str, Any]:
        values = super().to_dict()
        values["space"] = {
            k: {n: v for n, v in p.to_dict().items() if v is not None}
            for k, p in self.space.items()
        }
        return values

    def fingerprint(self, model: str, dataset: str) -> str:
        """What a study's trials are comparable under: reusing a study name with another
        model, dataset, objective or space is refused."""
        keys = {
            "model": model,
            "dataset": dataset,
            "objective": self.objective,
            "direction": self.direction,
            "space": self.entry()["space"],
        }
        return json.dumps(keys, sort_keys=True)


def canonical_key(family: str, key: str) -> str:
    """`model.<key>` or `train.<key>` for a space key; ConfigError naming it when the family
    and TrainConfig have no such key."""
    model_keys = set(get_family(family).config.field_names()) - {"inputs"}
    train_keys = set(TrainConfig.field_names())
    section, _, name = key.rpartition(".")
    if section in ("", "model") and name in model_keys:
        return f"model.{name}"
    if section in ("", "train") and name in train_keys:
        return f"train.{name}"
    valid = ", ".join(sorted(model_keys | {f"train.{k}" for k in train_keys}))
    raise ConfigError(
        f"tuning.{family}.space: unknown key {key!r} for model {family}; valid keys: {valid}"
    )


@dataclasses.dataclass(frozen=True)
class TuningConfig(StrictConfig):
    """params.yaml `tuning:`.

    Args:
        storage: Optuna's RDB storage URL; empty: `sqlite:///<artifacts>/optuna.db`
            (a PostgreSQL URL, `postgresql+psycopg2://user:password@host/db`, at scale).
        scheduler: the address of a Dask scheduler trials run on (`tcp://host:8786`); empty:
            a local cluster of `--parallel` worker processes.
        heartbeat_seconds: a running trial beats this often; one silent for twice as long
            (its process died) is marked failed and run again with the same values.
        families: `tuning.<family>` entries.
    """

    storage: str = ""
    scheduler: str = ""
    heartbeat_seconds: int = 10
    families: dict[str, FamilyTuning] = dataclasses.field(default_factory=dict)

    GLOBAL_KEYS = ("storage", "scheduler", "heartbeat_seconds")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, prefix: str = "") -> Self:
        values = dict(values or {})
        globals_ = {k: values.pop(k) for k in cls.GLOBAL_KEYS if k in values}
        families: dict[str, FamilyTuning] = {}
        for name, entry in values.items():
            if not isinstance(name, str):
                raise ConfigError(f"params.yaml tuning: {name!r} is not a key")
            try:
                get_family(name)
            except Exception:  # noqa: BLE001  (the registry's own error names the families)
                raise ConfigError(
                    f"unknown key tuning.{name}: neither a model family nor one of "
                    f"{', '.join(cls.GLOBAL_KEYS)}"
                ) from None
            families[name] = FamilyTuning.parse(name, entry or {})
        config = super().from_dict(globals_, prefix="tuning.")
        return dataclasses.replace(config, families=families)

    def validate(self) -> None:
        require(self.heartbeat_seconds >= 1, "tuning.heartbeat_seconds must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {k: getattr(self, k) for k in self.GLOBAL_KEYS}
        return {**values, **{n: f.entry() for n, f in self.families.items()}}

    def for_family(self, family: str) -> FamilyTuning:
        """`tuning.<family>`; ConfigError saying how to declare it when there is none."""
        tuning = self.families.get(family)
        if tuning is None or not tuning.space:
            raise ConfigError(
                f"no search space for {family}: add tuning.{family}.space to params.yaml, e.g. "
                f"`space: {{train.learning_rate: {{type: log_float, low: 1.0e-4, high: 1.0e-2}}}}`"
            )
        return tuning
