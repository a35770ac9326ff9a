"""The pipeline and training sequences as plain functions: check every run's config, prepare
and validate the datasets (a failed check stops everything before any training), train (up to
`pipeline.max_parallel` at once), evaluate, train and evaluate the fine-tunes of the runs that
succeeded, and publish a markdown report. Each step goes through
a `StepRunner`: directly by default, as Prefect tasks from the flows, which only call these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow

from kerasops.data.validation import ValidationError, ValidationReport
from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params, RunConfig, resolve_run_config
from kerasops.pipelines.config.pipeline import FineTuneSpec, RunSpec
from kerasops.pipelines.steps.evaluate import evaluate_run
from kerasops.pipelines.steps.prepare import prepare
from kerasops.pipelines.steps.runner import DirectRunner, Outcome, StepRunner, named
from kerasops.pipelines.steps.train import TrainResult, train_model
from kerasops.pipelines.steps.validate import validate
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.training.distribute import require_one_process


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run produced: a row per run (metrics, MLflow link) and the report."""

    rows: list[dict[str, Any]]
    validations: dict[str, ValidationReport]
    markdown: str


@named("check-configs")
def check_runs(
    params: Params, runs: Sequence[RunSpec], overrides: Sequence[str]
) -> list[RunConfig]:
    """Resolve every run's config first, so a misspelled key fails before any work is done; a
    fine-tune whose backbone run is not among `runs` needs that run's outputs on disk."""
    configs = []
    for spec in runs:
        if isinstance(spec, FineTuneSpec) and spec.backbone not in {r.name for r in runs}:
            require_backbone(params, spec)
        extra = spec_overrides(params, spec, overrides)
        configs.append(resolve_run_config(params, spec.model, spec.dataset, None, extra))
    for config in configs:
        require_one_process(config.train)
    return configs


def spec_overrides(params: Params, spec: RunSpec, overrides: Sequence[str]) -> tuple[str, ...]:
    """A fine-tune starts from its backbone run's folder, as its `fine_tune` DVC stage does
    (`--set backbone=<artifacts>/runs/<backbone>`); the user's overrides come after."""
    if isinstance(spec, FineTuneSpec):
        return (f"backbone={backbone_folder(params, spec)}", *overrides)
    return tuple(overrides)


def backbone_folder(params: Params, spec: FineTuneSpec) -> Path:
    return params.path("artifacts") / "runs" / spec.backbone


def require_backbone(params: Params, spec: FineTuneSpec) -> None:
    folder = backbone_folder(params, spec)
    if not (folder / "model.keras").is_file():
        raise KerasopsError(
            f"fine-tune {spec.name} starts from run {spec.backbone}, which has no model at "
            f"{folder}: select it too (--model {params.pipeline.runs[spec.backbone].model}) or "
            "train it first"
        )


def select_runs(
    params: Params, models: Sequence[str] | None, datasets: Sequence[str] | None
) -> list[RunSpec]:
    """`pipeline.runs`, then `pipeline.fine_tunes`, narrowed to the model families and datasets
    asked for."""
    pipeline = params.pipeline
    runs = [
        r
        for r in (*pipeline.run_specs, *pipeline.fine_tunes.values())
        if (not models or r.model in models) and (not datasets or r.dataset in datasets)
    ]
    if not runs:
        raise KerasopsError("no pipeline.runs match the models/datasets asked for; nothing to do")
    return runs


def run_pipeline(
    params: Params,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    runner: StepRunner | None = None,
) -> PipelineResult:
    """check configs -> prepare -> validate -> train -> evaluate -> report, for `pipeline.runs`
    and then `pipeline.fine_tunes` (or those of `models` and `datasets`). Raises KerasopsError
    naming every failed training, after the report is published."""
    runner = runner or default_runner(params)
    runs = select_runs(params, models, datasets)
    names = sorted({r.dataset for r in runs})
    configs = runner.run(check_runs, params, runs, tuple(overrides))
    for outcome in runner.map(prepare, [(params, name) for name in names]):
        outcome.result()
    validations = gather_validations(names, runner.map(validate, [(params, n) for n in names]))
    tags = runner.tags()
    tracking.configure(params)  # the store and experiment exist before trainings open them at once
    results, failures = train_and_evaluate(params, runs, configs, runner, tags)
    rows = report_rows(params, results) + [{**f, "metrics": {}} for f in failures]
    notes = [validations[n].to_markdown() for n in names]
    markdown = report_markdown("kerasops pipeline", rows, notes)
    runner.report("kerasops-pipeline", markdown, "metrics of every model and their runs")
    if failures:
        failed = [f"{f['model']}-{f['dataset']}: {f['error']}" for f in failures]
        raise KerasopsError(f"{len(failed)} training(s) failed: {'; '.join(failed)}")
    return PipelineResult(rows, validations, markdown)


def train_and_evaluate(
    params: Params,
    runs: Sequence[RunSpec],
    configs: Sequence[RunConfig],
    runner: StepRunner,
    tags: dict[str, str],
) -> tuple[list[TrainResult], list[dict[str, str]]]:
    """Train the runs at once, evaluating each that succeeded; then the fine-tunes of those
    (a backbone run that failed here fails its fine-tunes without training them)."""
    results: list[TrainResult] = []
    failures: list[dict[str, str]] = []
    failed: set[str] = set()

    def train_all(todo: list[tuple[RunSpec, RunConfig]]) -> None:
        trainings = runner.map(train_model, [(params, config, tags) for _, config in todo])
        for (spec, config), outcome in zip(todo, trainings, strict=True):
            if outcome.error is None:
                results.append(outcome.value)
                runner.run(evaluate_run, params, config.model, config.dataset)
            else:
                failed.add(spec.name)
                error = str(outcome.error).splitlines()[0] if str(outcome.error) else "failed"
                failures.append(failure(config, error))

    pairs = list(zip(runs, configs, strict=True))
    train_all([(s, c) for s, c in pairs if not isinstance(s, FineTuneSpec)])
    fine_tunes = [(s, c) for s, c in pairs if isinstance(s, FineTuneSpec)]
    for spec, config in fine_tunes:
        if spec.backbone in failed:
            failures.append(failure(config, f"its backbone run {spec.backbone} failed"))
    train_all([(s, c) for s, c in fine_tunes if s.backbone not in failed])
    return results, failures


def failure(config: RunConfig, error: str) -> dict[str, str]:
    return {"model": config.model, "dataset": config.dataset, "error": error}


def train_and_report(
    params: Params,
    model: str,
    dataset: str,
    overrides: Sequence[str] = (),
    runner: StepRunner | None = None,
) -> TrainResult:
    """Validate `dataset` (preparing it when needed), train `model` on it, publish the report."""
    runner = runner or default_runner(params)
    (config,) = runner.run(check_runs, params, [RunSpec(model=model, dataset=dataset)], overrides)
    if not (params.path("prepared_data") / dataset / "manifest.json").is_file():
        runner.run(prepare, params, dataset)
    report = runner.run(validate, params, dataset)
    result = runner.run(train_model, params, config, runner.tags())
    rows = report_rows(params, [result])
    markdown = report_markdown(f"Training {model} on {dataset}", rows, [report.to_markdown()])
    runner.report(f"training-{model}-{dataset}", markdown, f"{model} on {dataset}")
    return result


def default_runner(params: Params) -> DirectRunner:
    """Steps called directly, `pipeline.max_parallel` trainings at once, reports under
    `artifacts/reports/`."""
    reports = params.path("artifacts") / "reports"
    return DirectRunner(params.pipeline.max_parallel, reports)


def gather_validations(
    names: Sequence[str], outcomes: Sequence[Outcome[ValidationReport]]
) -> dict[str, ValidationReport]:
    """Every dataset's report; raise one ValidationError naming every failed check of all."""
    reports, errors = {}, []
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome.error, ValidationError):
            errors.append(outcome.error)
        else:
            reports[name] = outcome.result()  # re-raises the step's own error
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise KerasopsError("; ".join(str(e) for e in errors) + " (no model was trained)")
    return reports


def mlflow_link(params: Params, run_id: str) -> str:
    """URL of a run in the MLflow UI (the tracking server's, or `kerasops ui`'s)."""
    base = tracking.ui_url(params)
    experiment = mlflow.get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def report_rows(params: Params, results: Sequence[TrainResult]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        config = result.config
        rows.append(
            {
                "model": config.model,
                "dataset": config.dataset,
                "preset": config.preset,
                "run_id": result.run_id,
                "link": mlflow_link(params, result.run_id),
                "metrics": dict(result.metrics),
            }
        )
    return rows


METRIC_COLUMNS = ("test_accuracy", "test_macro_f1", "baseline_majority_accuracy", "test_mae")


def report_markdown(title: str, rows: Sequence[dict], notes: Sequence[str] = ()) -> str:
    """A markdown table: one row per run, its key metrics and a link to its MLflow run."""
    columns = [c for c in METRIC_COLUMNS if any(c in r.get("metrics", {}) for r in rows)]
    columns += [c for c in ("baseline_naive_mae",) if any(c in r["metrics"] for r in rows)]
    lines = [f"# {title}", "", "| model | dataset | " + " | ".join(columns) + " | MLflow run |"]
    lines.append("|---" * (len(columns) + 3) + "|")
    for row in rows:
        values = [f"{row['metrics'][c]:.4f}" if c in row["metrics"] else "" for c in columns]
        link = f"[{row['run_id'][:12]}]({row['link']})" if row.get("run_id") else row["error"]
        cells = [row["model"], row["dataset"], *values, link]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *notes]) + "\n"
