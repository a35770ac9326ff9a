"""The monitor step: what a served model was asked (its prediction logs) against what it was
trained on, feature by feature, as data validation measures drift (PSI), and its answers against
the training labels; recorded as an MLflow run and a report.

The reference is the prepared dataset named in the served version's self-description (its run
config): the same samples `kerasops validate` compares (input values, each tabular feature, or
text lengths in words; class labels), so a live PSI reads like a validation PSI.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from kerasops.data import load_prepared
from kerasops.data.validation import feature_samples, psi
from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.tracking import store as tracking
from kerasops.serving.prediction_log import SUFFIX, read_readable_log_files
from kerasops.serving.repository import version_info

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

log = logging.getLogger(__name__)


class TooLittleTraffic(KerasopsError):
    """Fewer logged requests in the window than `monitoring.min_requests`: no verdict."""


@dataclasses.dataclass(frozen=True)
class MonitorReport:
    """One look at a served model's logged traffic."""

    model: str
    versions: tuple[int, ...]
    records: int
    rows: int
    dataset: str
    scores: dict[str, float]  # sample name -> PSI against the training reference
    threshold: float
    run_id: str = ""

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(name for name, value in self.scores.items() if value > self.threshold)

    def to_markdown(self) -> str:
        lines = [
            f"# Monitoring {self.model}",
            "",
            f"{self.records} logged requests ({self.rows} rows) of versions "
            f"{', '.join(map(str, self.versions))} against the training data of "
            f"`{self.dataset}`; drift when a PSI exceeds {self.threshold}.",
            "",
            "| sample | PSI | drift |",
            "|---|---:|---|",
        ]
        for name, value in self.scores.items():
            lines.append(f"| {name} | {value:.4f} | {'yes' if value > self.threshold else ''} |")
        verdict = f"**drift** in {', '.join(self.drifted)}" if self.drifted else "no drift"
        return "\n".join([*lines, "", verdict, ""])


def parse_since(text: str) -> float:
    """`90s`, `15m`, `24h`, `7d` (or several: `1h30m`) as seconds; raise KerasopsError."""
    parts = DURATION.findall(text.strip().lower())
    if not parts or DURATION.sub("", text.strip().lower()).strip():
        raise KerasopsError(f"--since {text!r}: expected a duration such as 30m, 24h or 7d")
    return sum(float(value) * SECONDS[unit] for value, unit in parts)


def logged_requests(folder: Path, model: str, since: float | None) -> list[Any]:
    """The PredictionLogs of `model` in the files under `folder` written in the last `since`
    seconds (all with None)."""
    if not folder.is_dir():
        return []
    cutoff = time.time() - since if since is not None else 0.0
    files = [p for p in sorted(folder.rglob(f"*{SUFFIX}")) if p.stat().st_mtime >= cutoff]
    logs, skipped = read_readable_log_files(files)
    if skipped:
        log.warning(
            "skipped %d unreadable prediction log file(s) (truncated or corrupt): %s",
            len(skipped),
            ", ".join(str(p) for p in skipped),
        )
    return [e for e in logs if e.log_metadata.model_spec.name == model]


def live_samples(logs: list[Any]) -> tuple[dict[str, np.ndarray], int]:
    """The logged inputs and answers as the samples validation compares, and the row count."""
    import tensorflow as tf  # deferred: only reading tensors needs it

    inputs = [
        {k: tf.make_ndarray(v) for k, v in e.predict_log.request.inputs.items()} for e in logs
    ]
    outputs = [
        {k: tf.make_ndarray(v) for k, v in e.predict_log.response.outputs.items()} for e in logs
    ]
    name = sorted(inputs[0])[0]
    x = np.concatenate([row[name] for row in inputs if name in row])
    samples: dict[str, np.ndarray] = {}
    if x.dtype == object:
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in x]
        samples["text length (words)"] = np.array([len(t.split()) for t in texts], float)
    elif x.ndim == 2:
        for i in range(x.shape[-1]):
            samples[f"feature {i}"] = x[:, i].astype(float)
    else:
        samples["input values"] = x.reshape(-1).astype(float)
    if all("probabilities" in row for row in outputs):
        probabilities = np.concatenate([row["probabilities"] for row in outputs])
        samples["labels"] = np.argmax(probabilities, axis=-1).astype(float)  # predicted classes
    return samples, len(x)


def served_dataset(params: Params, model: str, versions: tuple[int, ...]) -> str:
    """The dataset the newest logged version was trained on (its export's run config)."""
    repository = Path(params.serving.at_root(Path(params.root)).model_repository)
    info = version_info(repository / model / str(max(versions)))
    dataset = info.get("run_config", {}).get("dataset")
    if not dataset:
        raise KerasopsError(
            f"{model} version {max(versions)} does not name its training dataset "
            f"(no run config in {repository / model}); pass --dataset"
        )
    return dataset


@named("monitor")
def monitor_model(
    params: Params, model: str, since: str | None = None, dataset: str | None = None
) -> MonitorReport:
    """Compare `model`'s logged traffic (of the last `since`, e.g. `24h`; all by default) with
    its training data; record the scores as an MLflow run and a report under
    `artifacts/monitoring/`. Raise KerasopsError when there is too little to judge."""
    window = parse_since(since) if since else None
    folder = Path(params.serving.at_root(Path(params.root)).prediction_log_dir)
    logs = logged_requests(folder, model, window)
    config = params.monitoring
    if len(logs) < config.min_requests:
        raise TooLittleTraffic(
            f"{len(logs)} logged requests of {model} under {folder}"
            f"{f' in the last {since}' if since else ''}; the monitor needs at least "
            f"{config.min_requests} (monitoring.min_requests): set a logging_config "
            "for it in models.config"
        )
    versions = tuple(sorted({e.log_metadata.model_spec.version.value for e in logs}))
    dataset = dataset or served_dataset(params, model, versions)
    reference = feature_samples(load_prepared(dataset, params.path("prepared_data")))
    live, rows = live_samples(logs)
    scores = {name: psi(reference[name], live[name]) for name in reference if name in live}
    if not scores:
        raise KerasopsError(f"{model}'s logged inputs do not match {dataset}'s samples")
    report = MonitorReport(model, versions, len(logs), rows, dataset, scores, config.drift_psi)
    return dataclasses.replace(report, run_id=record(params, report))


def record(params: Params, report: MonitorReport) -> str:
    """The report as files under `artifacts/monitoring/` and an MLflow run; the run's id."""
    folder = params.path("artifacts") / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{report.model}.md").write_text(report.to_markdown())
    summary = {**dataclasses.asdict(report), "drifted": list(report.drifted)}
    (folder / f"{report.model}.json").write_text(json.dumps(summary, indent=2))
    tracking.configure(params, retraining=True)
    tags = {"kind": "monitoring", "model": report.model, "dataset": report.dataset}
    with mlflow.start_run(run_name=f"monitor-{report.model}", tags=tags) as run:
        mlflow.log_params({"threshold_psi": report.threshold, "versions": report.versions})
        metrics = {
            f"psi.{re.sub(r'[^0-9A-Za-z_.-]+', '_', k)}": v for k, v in report.scores.items()
        }
        mlflow.log_metrics({**metrics, "requests": report.records, "rows": report.rows})
        mlflow.log_metric("drift", float(bool(report.drifted)))
        mlflow.set_tag("drift", ", ".join(report.drifted) or "none")
        mlflow.log_text(report.to_markdown(), "monitoring/report.md")
    return run.info.run_id
