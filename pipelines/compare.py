"""Tracked runs side by side: model, dataset, status and test metrics."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.settings import Params

COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "test_accuracy"),
    ("macro_f1", "test_macro_f1"),
    ("majority", "baseline_majority_accuracy"),
    ("mae", "test_mae"),
    ("rmse", "test_rmse"),
    ("naive_mae", "baseline_naive_mae"),
    ("map50", "test_map50"),
    ("random_map50", "baseline_random_map50"),
    ("seconds", "train_seconds"),
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
            "preset": run.data.tags.get("preset", ""),
            "dataset": run.data.tags.get("dataset", "?"),
            "status": run.info.status,
        }
        for label, key in COLUMNS:
            row[label] = run.data.metrics.get(key)
        rows.append(row)
    return rows


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
