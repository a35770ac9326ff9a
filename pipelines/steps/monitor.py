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
from kerasops.serving.repository import mapping_for, read_models_config, version_info
from kerasops.serving.shadow import PRIMARY, SHADOW, parse_origin

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


def _not_shadow(entry: Any) -> bool:
    """False for a shadow version's answer (mirrored traffic: the client never saw it)."""
    origin = parse_origin(entry.log_metadata.request_origin)
    return origin is None or origin["role"] != SHADOW


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


def require_served(params: Params, model: str) -> None:
    """Raise KerasopsError (a mistake, not too little traffic) for a model never exported."""
    repository = Path(params.serving.at_root(Path(params.root)).model_repository)
    if not (repository / model).is_dir():
        raise KerasopsError(
            f"no served model named {model!r} in {repository}; export one first "
            "(kerasops export artifacts/runs/<run>)"
        )


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
    require_served(params, model)
    folder = Path(params.serving.at_root(Path(params.root)).prediction_log_dir)
    logs = [e for e in logged_requests(folder, model, window) if _not_shadow(e)]
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
    folder = params.path("artifacts") / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{report.model}.md").write_text(report.to_markdown())
    summary = {**dataclasses.asdict(report), "run_id": run.info.run_id}
    summary["drifted"] = list(report.drifted)
    (folder / f"{report.model}.json").write_text(json.dumps(summary, indent=2))
    return run.info.run_id


# -- shadow traffic: champion and challenger on the same live inputs --------------------------


@dataclasses.dataclass(frozen=True)
class CompareReport:
    """The primary's and the shadow's answers to the same mirrored requests."""

    model: str
    champion: str  # as named on the command line (a label or a version)
    challenger: str
    versions: tuple[int, int]  # (champion, challenger) served versions
    pairs: int
    rows: int
    unpaired: int  # mirrored requests whose shadow answer was not logged
    kind: str  # classifier | regressor
    agreement: float | None  # classifiers: share of rows with the same predicted class
    mean_abs_diff: float | None  # regressors: mean |champion - challenger| over output values
    latency_ms: dict[str, dict[str, float]]  # champion/challenger -> p50, p99 (signature time)
    run_id: str = ""

    def metrics(self) -> dict[str, float]:
        """What the retraining gate reads: live_agreement, live_mean_abs_diff and
        live_latency_ms (the challenger's p99)."""
        values = {"live_latency_ms": self.latency_ms["challenger"]["p99"]}
        if self.agreement is not None:
            values["live_agreement"] = self.agreement
        if self.mean_abs_diff is not None:
            values["live_mean_abs_diff"] = self.mean_abs_diff
        return values

    def to_markdown(self) -> str:
        champion, challenger = self.versions
        lines = [
            f"# Shadow traffic of {self.model}: {self.champion} against {self.challenger}",
            "",
            f"{self.pairs} mirrored requests ({self.rows} rows) answered by both version "
            f"{champion} ({self.champion}, to the client) and version {challenger} "
            f"({self.challenger}, the shadow); {self.unpaired} without a logged shadow answer.",
            "",
        ]
        if self.agreement is not None:
            lines.append(f"Agreement (same predicted class): **{self.agreement:.4f}**")
        if self.mean_abs_diff is not None:
            lines.append(f"Mean absolute difference of outputs: **{self.mean_abs_diff:.6g}**")
        lines += ["", "| version | p50 ms | p99 ms |", "|---|---:|---:|"]
        for role, name in (("champion", self.champion), ("challenger", self.challenger)):
            figures = self.latency_ms[role]
            lines.append(f"| {name} | {figures['p50']:.3f} | {figures['p99']:.3f} |")
        return "\n".join([*lines, ""])


def shadow_pairs(logs: list[Any]) -> tuple[list[tuple[Any, Any]], int]:
    """(primary, shadow) records of mirrored requests, paired by request id, and the count of
    primaries left without a shadow record."""
    roles: dict[str, dict[str, Any]] = {}
    for entry in logs:
        origin = parse_origin(entry.log_metadata.request_origin)
        if origin is not None:
            roles.setdefault(origin["request"], {})[origin["role"]] = entry
    found = [(r[PRIMARY], r[SHADOW]) for r in roles.values() if PRIMARY in r and SHADOW in r]
    return found, sum(1 for r in roles.values() if SHADOW not in r)


def served_version(params: Params, model: str, name: str) -> int:
    """A version number, or the version a label of `model` points at in models.config."""
    if name.isdigit():
        return int(name)
    config = params.serving.at_root(Path(params.root))
    entries = read_models_config(Path(config.models_config), mapping_for(config))
    labels = next((e.label_map() for e in entries if e.name == model), None)
    if labels is None:
        raise KerasopsError(f"{model} is not in {config.models_config}")
    if name not in labels:
        known = ", ".join(sorted(labels)) or "none"
        raise KerasopsError(f"{model} has no label {name!r} (labels: {known}); or give a version")
    return labels[name]


def compare_answers(pairs: list[tuple[Any, Any]]) -> tuple[str, float | None, float | None, int]:
    """(kind, agreement, mean absolute difference, rows) of the paired answers."""
    import tensorflow as tf  # deferred: only reading tensors needs it

    def outputs(entry: Any) -> dict[str, np.ndarray]:
        return {k: tf.make_ndarray(v) for k, v in entry.predict_log.response.outputs.items()}

    answers = [(outputs(a), outputs(b)) for a, b in pairs]
    if all("probabilities" in a and "probabilities" in b for a, b in answers):
        ours = np.concatenate([a["probabilities"] for a, _ in answers])  # (rows, classes)
        theirs = np.concatenate([b["probabilities"] for _, b in answers])
        same = np.argmax(ours, axis=-1) == np.argmax(theirs, axis=-1)
        return "classifier", float(np.mean(same)), None, len(ours)
    keys = sorted(k for k, v in answers[0][0].items() if v.dtype.kind == "f")
    if not keys:
        raise KerasopsError("the logged answers hold no numeric output to compare")

    def flat(answer: dict[str, np.ndarray]) -> np.ndarray:  # (rows, values of every output)
        return np.concatenate([answer[k].reshape(len(answer[k]), -1) for k in keys], axis=1)

    ours = np.concatenate([flat(a) for a, _ in answers]).astype(float)
    theirs = np.concatenate([flat(b) for _, b in answers]).astype(float)
    return "regressor", None, float(np.mean(np.abs(ours - theirs))), len(ours)


def _versions(primary: Any, shadow: Any) -> tuple[int, int]:
    spec = (primary.log_metadata.model_spec, shadow.log_metadata.model_spec)
    return spec[0].version.value, spec[1].version.value


def _latency(records: list[Any]) -> dict[str, float]:
    values = [float(parse_origin(e.log_metadata.request_origin)["latency_ms"]) for e in records]
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


@named("monitor-compare")
def compare_shadow(
    params: Params, model: str, champion: str, challenger: str, since: str | None = None
) -> CompareReport:
    """Pair `model`'s mirrored requests (shadow traffic: the primary `champion` and the shadow
    `challenger`, each a label or a version) on the same live inputs; report agreement or mean
    absolute difference and latency of each, as an MLflow run and files under
    `artifacts/monitoring/`. Raise KerasopsError when there is too little to judge."""
    window = parse_since(since) if since else None
    folder = Path(params.serving.at_root(Path(params.root)).prediction_log_dir)
    versions = (served_version(params, model, champion), served_version(params, model, challenger))
    found, unpaired = shadow_pairs(logged_requests(folder, model, window))
    pairs = [(a, b) for a, b in found if _versions(a, b) == versions]
    minimum = params.monitoring.min_requests
    if len(pairs) < minimum:
        seen = sorted({_versions(a, b) for a, b in found})
        raise KerasopsError(
            f"{len(pairs)} mirrored requests of {model} answered by version {versions[0]} "
            f"({champion}) with version {versions[1]} ({challenger}) as shadow under {folder}"
            f"{f' in the last {since}' if since else ''}; the comparison needs at least "
            f"{minimum} (monitoring.min_requests). Pairs logged (primary, shadow): "
            f"{seen or 'none'}; set serving.shadow.{model} in params.yaml"
        )
    kind, agreement, difference, rows = compare_answers(pairs)
    latency = {
        "champion": _latency([a for a, _ in pairs]),
        "challenger": _latency([b for _, b in pairs]),
    }
    report = CompareReport(
        model, champion, challenger, versions, len(pairs), rows, unpaired, kind,
        agreement, difference, latency,
    )  # fmt: skip
    return dataclasses.replace(report, run_id=record_compare(params, report))


def compare_report_path(params: Params, model: str) -> Path:
    """Where `kerasops monitor MODEL --compare` writes its JSON report (the gate reads it)."""
    return params.path("artifacts") / "monitoring" / f"{model}-compare.json"


def record_compare(params: Params, report: CompareReport) -> str:
    """The comparison as files under `artifacts/monitoring/` and an MLflow run; the run's id."""
    path = compare_report_path(params, report.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".md").write_text(report.to_markdown())
    tracking.configure(params, retraining=True)
    tags = {"kind": "shadow-compare", "model": report.model}
    with mlflow.start_run(run_name=f"compare-{report.model}", tags=tags) as run:
        mlflow.log_params(
            {"champion": report.champion, "challenger": report.challenger,
             "versions": report.versions}
        )  # fmt: skip
        latency = {
            f"{role}_latency_{q}_ms": value
            for role, figures in report.latency_ms.items()
            for q, value in figures.items()
        }
        counts = {"pairs": report.pairs, "rows": report.rows, "unpaired": report.unpaired}
        mlflow.log_metrics({**report.metrics(), **latency, **counts})
        mlflow.log_text(report.to_markdown(), "monitoring/compare.md")
    summary = {**dataclasses.asdict(report), "run_id": run.info.run_id, "metrics": report.metrics()}
    summary["created_at"] = time.time()
    path.write_text(json.dumps(summary, indent=2))
    return run.info.run_id
