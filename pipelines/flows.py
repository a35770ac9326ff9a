"""Prefect flows: tasks are thin wrappers of the steps the CLI calls; flows only sequence them.

- `training_flow(model, dataset, overrides, params_path)`: prepare (when needed) -> validate ->
  train -> report artifact.
- `pipeline_flow(params_path, models, datasets, overrides)`: check every run's config -> prepare
  -> validate (a failed check stops the flow before any training) -> train (concurrently up to
  `pipeline.max_parallel`) -> evaluate -> report artifact.

A step that fails for a transient reason is retried with exponential backoff; a user mistake
(`KerasopsError`: bad config, missing or corrupt data, failed validation) is not.
Without `PREFECT_API_URL`, Prefect runs in local mode against a temporary server it starts itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from data.validation import ValidationError, ValidationReport
from models.config import KerasopsError
from pipelines import distribute, steps
from pipelines.settings import Params, load_params, resolve_run_config
from pipelines.train import TrainResult, train_model


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is a user mistake (KerasopsError): those fail the same again."""
    try:
        state.result()
    except KerasopsError:
        return False
    except Exception:  # noqa: BLE001  (any other failure may be transient)
        return True
    return False


TASK = {"cache_policy": NO_CACHE, "retry_condition_fn": retry_on_transient}


@task(name="check-configs", **TASK)
def check_configs_task(params_path: str, runs: Sequence[steps.RunSpec], overrides: Sequence[str]):
    """Resolve every run's config first, so a misspelled key fails before any work is done."""
    params = load_params(params_path)
    for run in runs:
        config = resolve_run_config(params, run.model, run.dataset, None, overrides)
        distribute.require_one_process(config.train)


@task(name="prepare", **TASK)
def prepare_task(params_path: str, dataset: str) -> str:
    return steps.prepare_step(load_params(params_path), dataset).content_hash


@task(name="validate", **TASK)
def validate_task(params_path: str, dataset: str) -> ValidationReport:
    return steps.validate_dataset(load_params(params_path), dataset)


@task(name="train", **TASK)
def train_task(params_path: str, model: str, dataset: str, overrides: Sequence[str]) -> TrainResult:
    tags = {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_name": str(flow_run.flow_name)}
    return train_model(load_params(params_path), model, dataset, overrides=overrides, tags=tags)


@task(name="evaluate", **TASK)
def evaluate_task(params_path: str, model: str, dataset: str) -> dict[str, float]:
    return steps.evaluate_run(load_params(params_path), model, dataset)


def with_retries(params: Params, *tasks: Any) -> list[Any]:
    """The tasks with `pipeline.retries` retries, delays doubling from `retry_delay_seconds`."""
    config = steps.pipeline_config(params)
    delays = exponential_backoff(backoff_factor=config.retry_delay_seconds)
    return [t.with_options(retries=config.retries, retry_delay_seconds=delays) for t in tasks]


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run produced: a row per run (metrics, MLflow link) and the report."""

    rows: list[dict[str, Any]]
    validations: dict[str, ValidationReport]
    markdown: str


def mlflow_link(params: Params, run_id: str) -> str:
    """URL of a run in the MLflow UI (the tracking server's, or `kerasops ui`'s)."""
    import mlflow

    from pipelines import tracking

    uri = tracking.tracking_uri(params)
    base = steps.pipeline_config(params).mlflow_ui_url
    if uri.startswith(("http://", "https://")):
        base = uri
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


def publish_report_artifact(markdown: str, key: str, description: str) -> str:
    """Publish `markdown` as this flow run's Prefect artifact under `key`; return the key."""
    key = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")
    create_markdown_artifact(markdown=markdown, key=key, description=description)
    return key


@flow(name="training", log_prints=True)
def training_flow(
    model: str, dataset: str, overrides: Sequence[str] = (), params_path: str = "params.yaml"
) -> TrainResult:
    """Validate `dataset` (preparing it when needed), train `model` on it, publish the report."""
    params = load_params(params_path)
    check_configs_task(params_path, [steps.RunSpec(model=model, dataset=dataset)], tuple(overrides))
    prepare, validate, train = with_retries(params, prepare_task, validate_task, train_task)
    if not (params.path("prepared_data") / dataset / "manifest.json").is_file():
        prepare(params_path, dataset)
    report = validate(params_path, dataset)
    result = train(params_path, model, dataset, tuple(overrides))
    notes = [report.to_markdown()]
    rows = report_rows(params, [result])
    markdown = report_markdown(f"Training {model} on {dataset}", rows, notes)
    publish_report_artifact(markdown, f"training-{model}-{dataset}", f"{model} on {dataset}")
    return result


@flow(name="pipeline", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def pipeline_flow(
    params_path: str = "params.yaml",
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> PipelineResult:
    """check configs -> prepare -> validate -> train -> evaluate -> report, for `pipeline.runs`."""
    params = load_params(params_path)
    config = steps.pipeline_config(params)
    runs = [
        r
        for r in config.run_specs
        if (not models or r.model in models) and (not datasets or r.dataset in datasets)
    ]
    if not runs:
        raise KerasopsError("no pipeline.runs match the models/datasets asked for; nothing to do")
    names = sorted({r.dataset for r in runs})
    prepare, validate, train, evaluate = with_retries(
        params, prepare_task, validate_task, train_task, evaluate_task
    )
    check_configs_task(params_path, runs, tuple(overrides))
    wait([prepare.submit(params_path, name) for name in names])
    validations = gather_validations(params_path, names, validate)
    trainings = [train.submit(params_path, r.model, r.dataset, tuple(overrides)) for r in runs]
    results, rows = [], []
    for run, future in zip(runs, trainings, strict=True):
        future.wait()
        if future.state.is_completed():
            results.append(future.result())
            evaluate(params_path, run.model, run.dataset)
        else:
            error = str(future.state.result(raise_on_failure=False)).splitlines()[0]
            rows.append({"model": run.model, "dataset": run.dataset, "metrics": {}, "error": error})
    rows = report_rows(params, results) + rows
    notes = [validations[n].to_markdown() for n in names]
    markdown = report_markdown("kerasops pipeline", rows, notes)
    publish_report_artifact(markdown, "kerasops-pipeline", "metrics of every model and their runs")
    failed = [f"{r['model']}-{r['dataset']}: {r['error']}" for r in rows if r.get("error")]
    if failed:
        raise KerasopsError(f"{len(failed)} training(s) failed: {'; '.join(failed)}")
    return PipelineResult(rows, validations, markdown)


def gather_validations(params_path: str, names: Sequence[str], validate: Any) -> dict:
    """Validate every dataset; raise one ValidationError naming every failed check of all."""
    futures = {name: validate.submit(params_path, name) for name in names}
    wait(list(futures.values()))
    reports, errors = {}, []
    for name, future in futures.items():
        outcome = future.state.result(raise_on_failure=False)
        if isinstance(outcome, ValidationReport):
            reports[name] = outcome
        elif isinstance(outcome, ValidationError):
            errors.append(outcome)
        else:
            future.result()  # re-raises the step's own error
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise KerasopsError("; ".join(str(e) for e in errors) + " (no model was trained)")
    return reports


def run_pipeline(
    params: Params,
    params_path: str,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> PipelineResult:
    """Run `pipeline_flow` with up to `pipeline.max_parallel` trainings at once."""
    workers = steps.pipeline_config(params).max_parallel
    runner = pipeline_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    return runner(params_path, models, datasets, overrides)
