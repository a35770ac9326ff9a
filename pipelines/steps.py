"""The pipeline's steps besides training, each one plain function: the CLI, the DVC stages and
the Prefect tasks all call these.

- `prepare_step`: prepare one dataset from its params.yaml entry.
- `validate_dataset`: validate the prepared version against its reference, write the report to
  `artifacts/validation/<name>.{json,md}`, keep the version as the next reference when it passed.
- `evaluate_run`: re-score `artifacts/runs/<model>-<dataset>/model.keras` on the test split and
  write `artifacts/metrics/<model>-<dataset>.json` and the learning curves
  `artifacts/plots/<model>-<dataset>.csv` (what `dvc metrics` and `dvc plots` read).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from data import Manifest, load_prepared, prepare_dataset, resolve_dataset_config
from data.errors import DataError
from data.validation import (
    ValidationConfig,
    ValidationError,
    ValidationReport,
    keep_reference,
    load_reference,
    validate_prepared,
)
from models.config import ConfigError, StrictConfig, require
from pipelines.settings import Params

log = logging.getLogger("kerasops.pipeline")


@dataclasses.dataclass(frozen=True)
class RunSpec(StrictConfig):
    """One model trained on one dataset by the pipeline."""

    model: str
    dataset: str

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dataset}"


@dataclasses.dataclass(frozen=True)
class PipelineConfig(StrictConfig):
    """params.yaml `pipeline:` — what `dvc repro` and `kerasops run-pipeline` run.

    Args:
        datasets: datasets prepared and validated (one DVC `prepare`/`validate` stage each).
        runs: `<model>-<dataset>: {model, dataset}` trained and evaluated (one `train` and one
            `evaluate` stage each, named by the key).
        max_parallel: trainings run at once by the Prefect pipeline.
        retries: retries of a step that failed for a transient reason (never a user mistake).
        retry_delay_seconds: first retry delay; it doubles each retry.
        mlflow_ui_url: base URL of the MLflow UI the report links runs to.
        validation: thresholds of the data checks, with `per_dataset` overrides.
    """

    datasets: tuple[str, ...] = ()
    runs: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_parallel: int = 1
    retries: int = 2
    retry_delay_seconds: float = 2.0
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        require(self.max_parallel >= 1, "pipeline.max_parallel must be >= 1")
        require(self.retries >= 0, "pipeline.retries must be >= 0")
        require(self.retry_delay_seconds >= 0, "pipeline.retry_delay_seconds must be >= 0")
        missing = sorted({r.dataset for r in self.run_specs} - set(self.datasets))
        require(not missing, f"pipeline.runs use datasets not in pipeline.datasets: {missing}")

    @property
    def run_specs(self) -> tuple[RunSpec, ...]:
        """The runs in order; each key must be `<model>-<dataset>` (the DVC stage's name)."""
        specs = []
        for key, values in self.runs.items():
            spec = RunSpec.from_dict(values, prefix=f"pipeline.runs.{key}.")
            require(key == spec.name, f"pipeline.runs.{key} must be named {spec.name}")
            specs.append(spec)
        return tuple(specs)


def pipeline_config(params: Params) -> PipelineConfig:
    """The strict `pipeline:` section; raise ConfigError naming a bad key."""
    return PipelineConfig.from_dict(params.pipeline, prefix="pipeline.")


def validation_config(params: Params, dataset: str) -> ValidationConfig:
    """Thresholds for `dataset`: `pipeline.validation`, updated by its `per_dataset` entry."""
    values = dict(pipeline_config(params).validation)
    per_dataset = values.pop("per_dataset", None) or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError("pipeline.validation.per_dataset must map dataset names to thresholds")
    prefix = "pipeline.validation."
    if dataset in per_dataset:
        values.update(per_dataset[dataset] or {})
        prefix = f"pipeline.validation.per_dataset.{dataset}."
    return ValidationConfig.from_dict(values, prefix=prefix)


def prepare_step(params: Params, dataset: str) -> Manifest:
    """Prepare `dataset` from its params.yaml entry (or built-in defaults)."""
    config = resolve_dataset_config(dataset, params.datasets)
    return prepare_dataset(dataset, config, params.path("raw_data"), params.path("prepared_data"))


def validate_dataset(params: Params, dataset: str, keep: bool = True) -> ValidationReport:
    """Validate the prepared `dataset` against its reference and write the report.

    Raises ValidationError (naming each failed check) when a check failed; the reference is then
    left as it was. A passed version becomes the reference of the next one when `keep`.
    """
    config = validation_config(params, dataset)
    prepared_root = params.path("prepared_data")
    current = load_prepared(dataset, prepared_root)
    try:
        reference = load_reference(prepared_root, dataset)
    except DataError as exc:
        log.warning("ignoring the unreadable reference of %s: %s", dataset, exc)
        reference = None
    report = validate_prepared(current, reference, config)
    folder = params.path("artifacts") / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    verdict = {"passed": report.passed, "failures": len(report.failures)}
    verdict["warnings"] = len(report.warnings)
    (folder / f"{dataset}.json").write_text(json.dumps(verdict, indent=2) + "\n")
    (folder / f"{dataset}.md").write_text(report.to_markdown())
    for warning in report.warnings:
        log.warning("%s: %s: %s", dataset, warning.name, warning.message)
    if not report.passed:
        raise ValidationError(report)
    if keep and report.reference_hash != report.content_hash:
        keep_reference(prepared_root, dataset)
    return report


def evaluate_run(params: Params, model: str, dataset: str) -> dict[str, float]:
    """Re-score the saved model of `model` on `dataset`'s test split; write metrics and curves."""
    import keras

    import models  # noqa: F401  (registers the custom layers)
    from models import get_family
    from pipelines.recipes import get_recipe
    from pipelines.train import run_name

    name = run_name(model, dataset)
    run_dir = params.path("artifacts") / "runs" / name
    if not (run_dir / "model.keras").is_file():
        raise DataError(f"{run_dir / 'model.keras'} does not exist; train it first")
    prepared = load_prepared(dataset, params.path("prepared_data"))
    loaded = keras.saving.load_model(run_dir / "model.keras")
    family = get_family(model)
    saved = json.loads((run_dir / "config.json").read_text()).get("model_config")
    typed = family.config.from_dict(saved) if saved else None  # the run's config, as trained
    evaluation = get_recipe(family.recipe).evaluate(loaded, prepared, typed)
    metrics = {k: round(float(v), 6) for k, v in evaluation.metrics.items()}
    for folder in ("metrics", "plots"):
        (params.path("artifacts") / folder).mkdir(parents=True, exist_ok=True)
    target = params.path("artifacts") / "metrics" / f"{name}.json"
    target.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    history = run_dir / "history.csv"
    if history.is_file():
        shutil.copyfile(history, params.path("artifacts") / "plots" / f"{name}.csv")
    return metrics


def metrics_path(params: Params, model: str, dataset: str) -> Path:
    return params.path("artifacts") / "metrics" / f"{model}-{dataset}.json"
