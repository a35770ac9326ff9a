"""`params.yaml`, typed once, when it is loaded.

Every section becomes a frozen, strictly checked config: unknown keys and wrong types are errors
that name the key. Paths are resolved against the project root (the folder holding
params.yaml), whatever the working directory. `load_params` is the one reader of the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml

from kerasops.config import StrictConfig, load_yaml, require
from kerasops.data import BUILTIN_DATASETS, SourceConfig, resolve_dataset_config
from kerasops.data.errors import DataError
from kerasops.data.validation import ValidationConfig
from kerasops.errors import ConfigError
from kerasops.models import get_family, preset_values
from kerasops.models.training import TrainConfig
from kerasops.pipelines.config.pipeline import PipelineConfig
from kerasops.pipelines.config.retraining import RetrainingConfig
from kerasops.pipelines.config.tuning import TuningConfig
from kerasops.serving.config import ServingConfig

DEFAULT_PARAMS = Path("params.yaml")


@dataclasses.dataclass(frozen=True)
class MonitoringConfig(StrictConfig):
    """`kerasops monitor`: when logged traffic has drifted from the training data.

    Args:
        drift_psi: a sample (input values, a feature, text lengths, predicted classes) whose
            population stability index against the training split exceeds this has drifted
            (0.1 is a small shift, 0.25 a large one, in the usual reading of PSI).
        min_requests: fewer logged requests than this are too few to judge (an error).
        compare_max_age_h: the retraining gate's live_* rules trust a shadow-traffic
            comparison report (`kerasops monitor NAME --compare`) at most this many hours old.
    """

    drift_psi: float = 0.2
    min_requests: int = 20
    compare_max_age_h: float = 24.0

    def validate(self) -> None:
        require(self.drift_psi > 0, "monitoring.drift_psi must be positive")
        require(self.min_requests >= 1, "monitoring.min_requests must be >= 1")
        require(self.compare_max_age_h > 0, "monitoring.compare_max_age_h must be positive")


@dataclasses.dataclass(frozen=True)
class TrackingConfig(StrictConfig):
    """Where MLflow records runs.

    Args:
        experiment: MLflow experiment of the training runs.
        retraining_experiment: the experiment retraining cycles are recorded in (its
            `{experiment}` is the name above), apart from the trainings they compare.
        tracking_uri: empty for the embedded SQLite store under `artifacts/`;
            `MLFLOW_TRACKING_URI` in the environment takes precedence.
        system_metrics: record CPU, memory, disk and network use beside each training run.
        system_metrics_interval_s: seconds between two system metrics samples.
        mlflow_evaluate: score classifiers once more through `mlflow.models.evaluate` on the
            test split's predictions (its accuracy_score, f1_score, per-class metrics and
            confusion-matrix plot beside the project's own test_* metrics).
    """

    experiment: str = "kerasops"
    retraining_experiment: str = "{experiment}-retraining"
    tracking_uri: str = ""
    system_metrics: bool = True
    system_metrics_interval_s: float = 5.0
    mlflow_evaluate: bool = True

    def validate(self) -> None:
        require(bool(self.experiment.strip()), "tracking.experiment must not be empty")
        try:
            self.retraining_experiment.format(experiment="e")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                "tracking.retraining_experiment may only use {experiment}, "
                f"got {self.retraining_experiment!r}"
            ) from None
        require(self.system_metrics_interval_s >= 1, "tracking.system_metrics_interval_s >= 1")


@dataclasses.dataclass(frozen=True)
class Paths(StrictConfig):
    """Folders, relative to the project root (the folder holding params.yaml)."""

    artifacts: str = "artifacts"
    raw_data: str = "data/raw"
    prepared_data: str = "data/prepared"


@dataclasses.dataclass(frozen=True)
class ModelSection(StrictConfig):
    """One `models.<family>:` entry: a preset, `train:` overrides, and the family's own keys
    (`values`), each checked against the family when params.yaml is read."""

    preset: str | None = None
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, family: str, entry: Any, defaults: TrainConfig) -> ModelSection:
        """Check `models.<family>` against the family's config, presets and TrainConfig."""
        prefix = f"models.{family}."
        require(isinstance(entry, Mapping), f"params.yaml models.{family} must be a mapping")
        values = dict(entry)
        preset, train = values.pop("preset", None), values.pop("train", None) or {}
        require(preset is None or isinstance(preset, str), f"{prefix}preset must be a name")
        require(isinstance(train, Mapping), f"{prefix}train must be a mapping")
        config = get_family(family).config
        config.from_dict({**preset_values(family, preset), **values}, prefix=prefix)
        TrainConfig.from_dict({**defaults.to_dict(), **train}, prefix=f"{prefix}train.")
        return cls(preset=preset, train=dict(train), values=values)

    def entry(self) -> dict[str, Any]:
        """The section as params.yaml writes it."""
        entry: dict[str, Any] = {"preset": self.preset} if self.preset else {}
        return {**entry, **({"train": self.train} if self.train else {}), **self.values}


def _model_sections(models: Any, defaults: TrainConfig) -> dict[str, ModelSection]:
    require(isinstance(models, Mapping), "params.yaml models must map model families to settings")
    for name in models:
        if not isinstance(name, str):
            raise ConfigError(f"params.yaml models: {name!r} is not a model name")
        get_family(name)  # an unknown family is an error naming the known ones
    return {name: ModelSection.parse(name, entry or {}, defaults) for name, entry in models.items()}


def _dataset_configs(datasets: Any) -> dict[str, SourceConfig]:
    require(isinstance(datasets, Mapping), "params.yaml datasets must map names to settings")
    return {name: resolve_dataset_config(name, datasets) for name in datasets}


@dataclasses.dataclass(frozen=True)
class Params(StrictConfig):
    """The whole of params.yaml, every section typed."""

    paths: Paths = Paths()
    tracking: TrackingConfig = TrackingConfig()
    train: TrainConfig = TrainConfig()
    datasets: dict[str, SourceConfig] = dataclasses.field(default_factory=dict)
    models: dict[str, ModelSection] = dataclasses.field(default_factory=dict)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    retraining: RetrainingConfig = dataclasses.field(default_factory=RetrainingConfig)
    monitoring: MonitoringConfig = dataclasses.field(default_factory=MonitoringConfig)
    tuning: TuningConfig = dataclasses.field(default_factory=TuningConfig)
    root: str = "."

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, prefix: str = "") -> Self:
        """Type every section; `datasets` and `models` entries are checked against the data
        sources and model families they name."""
        values = dict(values or {})
        train = TrainConfig.from_dict(values.get("train") or {}, prefix="train.")
        typed = {"datasets": _dataset_configs, "models": lambda v: _model_sections(v, train)}
        for key, parse in typed.items():
            if isinstance(values.get(key), Mapping) and all(
                not isinstance(v, StrictConfig) for v in values[key].values()
            ):
                values[key] = parse(values[key])
        return super().from_dict(values, prefix)

    def to_dict(self) -> dict[str, Any]:
        """The params as params.yaml writes them (`from_dict` reads them back)."""
        values = super().to_dict()
        values["models"] = {name: section.entry() for name, section in self.models.items()}
        values["tuning"] = self.tuning.to_dict()
        return values

    def path(self, name: str) -> Path:
        """An absolute folder from `paths`, resolved against the project root."""
        return (Path(self.root) / getattr(self.paths, name)).resolve()

    def dataset(self, name: str) -> SourceConfig:
        """The source config of dataset `name`: its params.yaml entry, else the built-in's.

        Raises DataError naming the params.yaml fix for a dataset neither declares.
        """
        if name in self.datasets:
            return self.datasets[name]
        if name not in BUILTIN_DATASETS:
            known = ", ".join(sorted({*BUILTIN_DATASETS, *self.datasets}))
            raise DataError(
                f"unknown dataset {name!r}; known datasets: {known}. Declare your own with "
                f"`kerasops data add PATH --name {name} --source SOURCE`, or under "
                f"`datasets:` in params.yaml, e.g. `{name}: {{source: image_folder, path: "
                f"{name}, image_size: [64, 64]}}`"
            )
        return resolve_dataset_config(name, {})

    def validation(self, dataset: str) -> ValidationConfig:
        """The data-validation thresholds for `dataset`."""
        return self.pipeline.validation.for_dataset(dataset)


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read params.yaml (missing file: all defaults); raise ConfigError on any bad key."""
    path = Path(path)
    values: dict[str, Any] = {}
    if path.exists():
        try:
            values = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        require(isinstance(values, dict), f"{path} must hold a mapping at the top level")
    require("root" not in values, f"{path}: 'root' is not a params.yaml key")
    params = Params.from_dict(values)
    root = path.resolve().parent
    return dataclasses.replace(params, root=str(root), serving=params.serving.at_root(root))
