"""Tracked runs side by side: model, dataset, status, and each run's headline test metric
beside its baseline (accuracy for classifiers, MAE for forecasters, mAP for detectors,
perplexity for language models, exact match for translators, ROC AUC for anomaly scoring,
Fréchet distance for generators)."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.settings import Params

# Each family's headline test metric and the baseline it must beat; a run shows the first it has.
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    # (label, metric, baseline label, baseline metric)
    ("perplexity", "test_perplexity", "unigram", "baseline_unigram_perplexity"),
    ("exact_match", "test_exact_match", "copy", "baseline_copy_exact_match"),
    ("map50", "test_map50", "random boxes", "baseline_random_map50"),
    ("anomaly_auc", "anomaly_roc_auc", "mean image", "baseline_mean_image_roc_auc"),
    ("frechet", "test_frechet_distance", "noise", "baseline_noise_frechet_distance"),
    ("mae", "test_mae", "naive", "baseline_naive_mae"),
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
