"""The `pipeline:` section of params.yaml: what `dvc repro` and `kerasops run-pipeline` run, how
failed steps are retried, and the data-validation thresholds."""

from __future__ import annotations

import dataclasses
from typing import Any

from kerasops.config import StrictConfig, require
from kerasops.data.validation import ValidationConfig


@dataclasses.dataclass(frozen=True)
class RunSpec(StrictConfig):
    """One model trained on one dataset by the pipeline."""

    model: str
    dataset: str

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dataset}"


@dataclasses.dataclass(frozen=True)
class FineTuneSpec(RunSpec):
    """A model trained from the outputs of one of `pipeline.runs` (its `backbone`), after it
    and again whenever it changes."""

    backbone: str = ""


@dataclasses.dataclass(frozen=True)
class ValidationSection(ValidationConfig):
    """`pipeline.validation`: the thresholds, with `per_dataset` overrides
    (`per_dataset: {my_dataset: {max_leakage_fraction: 0.01}}`)."""

    per_dataset: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        for name in self.per_dataset:
            self.for_dataset(name)  # every override is checked when params.yaml is read

    def for_dataset(self, dataset: str) -> ValidationConfig:
        """The thresholds for `dataset`: these, updated by its `per_dataset` entry."""
        values = {k: v for k, v in self.to_dict().items() if k != "per_dataset"}
        if dataset not in self.per_dataset:
            return ValidationConfig.from_dict(values, prefix="pipeline.validation.")
        values.update(self.per_dataset[dataset] or {})
        prefix = f"pipeline.validation.per_dataset.{dataset}."
        return ValidationConfig.from_dict(values, prefix=prefix)


@dataclasses.dataclass(frozen=True)
class PipelineConfig(StrictConfig):
    """params.yaml `pipeline:` — what `dvc repro` and `kerasops run-pipeline` run.

    Args:
        datasets: datasets prepared and validated (one DVC `prepare`/`validate` stage each).
        runs: `<model>-<dataset>: {model, dataset}` trained, evaluated and exported (one
            `train`, `evaluate` and `export` stage each, named by the key).
        fine_tunes: `<model>-<dataset>: {model, dataset, backbone}` trained with
            `--set backbone=<artifacts>/runs/<backbone>` and evaluated, after the run named by
            `backbone` (one `fine_tune` stage each).
        tunes: `<model>-<dataset>: {model, dataset}` studied by the `tune` stage (one each,
            `kerasops tune --apply`: the best values into `models.<model>`); none by default,
            a study starts as a DVC experiment (README "Tuning").
        max_parallel: trainings run at once by the Prefect pipeline: 1 in the flow's own
            process; K > 1 on a local Dask cluster of K worker processes (one training each,
            TensorFlow's threads = cores / K), or on the cluster of `scheduler`.
        scheduler: the address of a Dask scheduler the trainings run on (`tcp://host:8786`);
            empty: the local cluster when `max_parallel` > 1.
        retries: retries of a step that failed for a transient reason (never a user mistake).
        retry_delay_seconds: first retry delay; it doubles each retry.
        mlflow_ui_url: base URL of the MLflow UI the report links runs to when no tracking
            server is configured and no `kerasops ui` is running on this store.
        validation: thresholds of the data checks, with `per_dataset` overrides.
    """

    datasets: tuple[str, ...] = ()
    runs: dict[str, RunSpec] = dataclasses.field(default_factory=dict)
    fine_tunes: dict[str, FineTuneSpec] = dataclasses.field(default_factory=dict)
    tunes: dict[str, RunSpec] = dataclasses.field(default_factory=dict)
    max_parallel: int = 1
    scheduler: str = ""
    retries: int = 2
    retry_delay_seconds: float = 2.0
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    validation: ValidationSection = dataclasses.field(default_factory=ValidationSection)

    def validate(self) -> None:
        require(self.max_parallel >= 1, "pipeline.max_parallel must be >= 1")
        require(self.retries >= 0, "pipeline.retries must be >= 0")
        require(self.retry_delay_seconds >= 0, "pipeline.retry_delay_seconds must be >= 0")
        for key, spec in self.runs.items():
            require(key == spec.name, f"pipeline.runs.{key} must be named {spec.name}")
        missing = sorted({r.dataset for r in self.run_specs} - set(self.datasets))
        require(not missing, f"pipeline.runs use datasets not in pipeline.datasets: {missing}")
        for key, spec in self.fine_tunes.items():
            require(key == spec.name, f"pipeline.fine_tunes.{key} must be named {spec.name}")
            require(
                spec.backbone in self.runs,
                f"pipeline.fine_tunes.{key}.backbone {spec.backbone!r} is not in pipeline.runs",
            )
            require(
                spec.dataset in self.datasets,
                f"pipeline.fine_tunes.{key} uses {spec.dataset!r}, not in pipeline.datasets",
            )
            require(key not in self.runs, f"{key} is in both pipeline.runs and fine_tunes")
        for key, spec in self.tunes.items():
            require(key == spec.name, f"pipeline.tunes.{key} must be named {spec.name}")
            require(
                spec.dataset in self.datasets,
                f"pipeline.tunes.{key} uses {spec.dataset!r}, not in pipeline.datasets",
            )

    @property
    def run_specs(self) -> tuple[RunSpec, ...]:
        """The runs in order; each key is `<model>-<dataset>` (the DVC stage's name)."""
        return tuple(self.runs.values())
