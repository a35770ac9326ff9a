"""Tracked runs read back for the terminal: `kerasops compare` (runs side by side) and
`kerasops lineage` (the chain from one run back to its code, params and data).

`compare` shows model, dataset, status, and each run's headline test metric beside its
baseline (accuracy for classifiers, MAE for forecasters, mAP for detectors, mean IoU for segmenters,
accuracy on the voice it never heard for keyword spotters,
perplexity for language models, exact match for translators, ROC AUC for anomaly scoring,
Fréchet distance for generators)."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.tracking import store as tracking

_UNSEEN_MAJORITY = "baseline_unseen_voice_majority_accuracy"  # a keyword spotter's held-out voice

# Each family's headline test metric and the baseline it must beat; a run shows the first it has.
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    # (label, metric, baseline label, baseline metric)
    ("perplexity", "test_perplexity", "unigram", "baseline_unigram_perplexity"),
    ("masked_perplexity", "test_masked_perplexity", "unigram", "baseline_masked_perplexity"),
    ("exact_match", "test_exact_match", "copy", "baseline_copy_exact_match"),
    ("map50", "test_map50", "random boxes", "baseline_random_map50"),
    ("mean_iou", "test_mean_iou", "all background", "baseline_background_mean_iou"),
    ("anomaly_auc", "anomaly_roc_auc", "mean image", "baseline_mean_image_roc_auc"),
    ("frechet", "test_frechet_distance", "noise", "baseline_noise_frechet_distance"),
    ("mae", "test_mae", "naive", "baseline_naive_mae"),
    ("unseen_voice_accuracy", "unseen_voice_accuracy", "majority", _UNSEEN_MAJORITY),
    ("accuracy", "test_accuracy", "majority", "baseline_majority_accuracy"),
    ("reconstruction_mse", "test_reconstruction_mse", "mean image", "baseline_mean_image_mse"),
)


def compare_runs(
    params: Params, model: str | None = None, dataset: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest `limit` runs of the experiment, optionally filtered by model and dataset."""
    experiment_id = tracking.configure(params)
    filters = [
        f"tags.model = '{model}'" if model else "",
        f"tags.dataset = '{dataset}'" if dataset else "",
    ]
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=" and ".join(f for f in filters if f),
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run": run.info.run_id[:8],
            "model": run.data.tags.get("model", "?"),
            "preset": run.data.tags.get("preset", "None"),
            "dataset": run.data.tags.get("dataset", "?"),
            "status": run.info.status,
        }
        if row["preset"] == "None":  # trained without a preset
            row["preset"] = "-"
        rows.append({**row, **headline(run.data.metrics)})
    return rows


def headline(metrics: dict[str, float]) -> dict[str, Any]:
    """The run's headline metric, its value, its baseline and the training seconds."""
    found = next((h for h in HEADLINES if h[1] in metrics), None)
    row: dict[str, Any] = {"metric": None, "score": None, "baseline": None}
    if found is not None:
        label, key, baseline_label, baseline_key = found
        baseline = metrics.get(baseline_key)
        row = {
            "metric": label,
            "score": metrics[key],
            "baseline": None if baseline is None else f"{cell(baseline)} ({baseline_label})",
        }
    return {**row, "seconds": metrics.get("train_seconds")}


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table; metrics a run lacks show as '-'."""
    headers = list(rows[0])
    cells = [[cell(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 100 else f"{value:.4f}"
    return str(value)


def resolve_run_id(params: Params, prefix: str) -> str:
    """The full id of the one run whose id starts with `prefix` (as git resolves a short
    commit), in any experiment of the store MLflow is pointed at.

    Raises KerasopsError when no run matches, or naming the runs that match when several do.
    """
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise KerasopsError(
            f"{prefix!r} is not a run id (hexadecimal, as `kerasops compare` shows)"
        )
    client = MlflowClient()
    if len(prefix) == 32:
        try:
            return client.get_run(prefix).info.run_id
        except MlflowException:
            pass
    matches = [run for run in all_runs(client) if run.info.run_id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0].info.run_id
    if not matches:
        raise KerasopsError(
            f"no MLflow run {prefix!r} in {tracking.tracking_uri(params)}; "
            "list runs with `kerasops compare`"
        )
    shown = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in matches[:5])
    more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
    raise KerasopsError(f"run id {prefix!r} is ambiguous: {shown}{more}; give more characters")


def all_runs(client: MlflowClient) -> list[Any]:
    """Every run of every experiment (active and deleted experiments alike), page by page."""
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs, token = [], None
    while experiments:
        page = client.search_runs(
            experiments, run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def describe_run(params: Params, run_id: str, depth: int = 0) -> str:
    """The lineage chain of one MLflow run (`run_id` or a unique prefix), as printable lines;
    a fine-tune's chain goes on with the pretraining run of its backbone."""
    tracking.configure(params)
    run = mlflow.get_run(resolve_run_id(params, run_id))
    run_id = run.info.run_id
    tags = run.data.tags
    dirty = {"true": "uncommitted changes", "false": "clean"}.get(tags.get("git.dirty"), "unknown")
    lines = [
        f"run       {run_id} ({tags.get('mlflow.runName', '?')}, {run.info.status})",
        f"model     {tags.get('model', '?')} preset {tags.get('preset', '?')}",
        f"code      git commit {tags.get('git.commit', 'not recorded')} ({dirty})",
        f"params    resolved params hash {tags.get('params_hash', 'not recorded')}",
    ]
    for key in sorted(k for k in tags if k.startswith("dvc.prepared.") and k.count(".") == 2):
        name = key.removeprefix("dvc.prepared.")
        recorded = tags.get(f"{key}.recorded", "not recorded")
        lines.append(f"data      {name}: prepared {tags[key]} (DVC recorded: {recorded})")
        if f"dvc.raw.{name}" in tags:
            lines.append(f"          {name}: raw {tags[f'dvc.raw.{name}']}")
    if "data.content_hash" in tags:
        lines.append(f"          content sha256 {tags['data.content_hash']}")
    flow_run = tags.get("prefect.flow_run_id")
    lines.append(f"flow      Prefect flow run {flow_run or 'none (not run by a flow)'}")
    for name in ("test_accuracy", "test_macro_f1", "test_mae", "test_masked_accuracy"):
        if name in run.data.metrics:
            lines.append(f"metric    {name} {run.data.metrics[name]:.4f}")
    backbone = run.data.params.get("backbone_run_id", "")
    if backbone and backbone != "unknown" and depth < 3:
        lines.append(f"backbone  {backbone} ({run.data.params.get('backbone_path', '?')})")
        lines.append(describe_run(params, backbone, depth + 1))
    return "\n".join(lines)
