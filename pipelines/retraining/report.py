"""The record of one retraining cycle: what it found and decided, step by step (`CycleReport`),
as an MLflow run of its own (`record_cycle`) and as markdown (the Prefect artifact and
`retraining/cycle.md` in MLflow)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from mlflow.entities import Metric, Param

from kerasops.pipelines.config import Params
from kerasops.pipelines.retraining.challenger import Challenger
from kerasops.pipelines.retraining.infra import InfraReport
from kerasops.pipelines.steps.gate import GateDecision
from kerasops.pipelines.steps.publish import Publication
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.tracking import registry
from kerasops.pipelines.tracking import store as tracking


@dataclasses.dataclass
class CycleReport:
    """Everything one retraining cycle found and decided, with each step's wall time."""

    name: str
    model: str
    dataset: str
    outcome: str = "running"
    data_version: str | None = None
    champion_before: str | None = None
    served_before: int | None = None
    challenger: Challenger | None = None
    decision: GateDecision | None = None
    infra: InfraReport | None = None
    publication: Publication | None = None
    failed_step: str | None = None
    error: str | None = None
    steps: dict[str, float] = dataclasses.field(default_factory=dict)
    aliases_after: dict[str, str] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step; on an exception record which step failed and re-raise."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self.failed_step, self.outcome = name, "failed"
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            raise
        finally:
            self.steps[name] = time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        values = {f"step_seconds.{k}": v for k, v in self.steps.items()}
        values["step_seconds.total"] = sum(self.steps.values())
        if self.decision is not None:
            values.update({f"challenger.{k}": v for k, v in self.decision.challenger.items()})
            champion = self.decision.champion or {}
            values.update({f"champion.{k}": v for k, v in champion.items()})
        if self.infra is not None:
            values.update(self.infra.metrics())
        return values

    def to_markdown(self) -> str:
        return cycle_markdown(self)


@named("record-cycle")
def record_cycle(params: Params, report: CycleReport, flow_run_id: str | None = None) -> str:
    """Log the cycle as its own MLflow run (decision, every metric, step times); return its id."""
    experiment_id = tracking.configure(params, retraining=True)
    mlflow_client = registry.client()
    report.aliases_after = registry.aliases(report.name)
    tags = {
        "kerasops.flow": "retraining",
        "model": report.model,
        "dataset": report.dataset,
        "registered_model": report.name,
        "kerasops.outcome": report.outcome,
        "kerasops.data_version": report.data_version or "",
        "prefect.flow_run_id": flow_run_id or "",
    }
    if report.challenger is not None:
        tags["challenger_version"] = report.challenger.version
        tags["challenger_run_id"] = report.challenger.run_id
    if report.failed_step:
        tags["kerasops.failed_step"] = report.failed_step
    tags.update({f"alias.{a}": v for a, v in report.aliases_after.items()})
    run = mlflow_client.create_run(experiment_id, run_name=f"retrain-{report.name}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in report.metrics().items()]
    parameters = [Param("champion_before", str(report.champion_before))]
    mlflow_client.log_batch(run_id, metrics=metrics, params=parameters)
    mlflow_client.log_text(run_id, report.to_markdown(), "retraining/cycle.md")
    if report.decision is not None:
        mlflow_client.log_dict(run_id, report.decision.to_dict(), "retraining/gate.json")
    status = "FAILED" if report.outcome == "failed" else "FINISHED"
    mlflow_client.set_terminated(run_id, status)
    tracking.configure(params)  # back to the training runs' experiment
    return run_id


def cycle_markdown(report: Any) -> str:
    """Outcome, data version, registry and serving changes, gate table, infra checks, timings."""
    lines = [f"# Retraining {report.name}: {report.outcome}", ""]
    lines += [
        f"- model `{report.model}` on dataset `{report.dataset}`",
        f"- data version (DVC): `{report.data_version or 'not detected'}`",
        f"- champion before: version {report.champion_before or 'none'}; "
        f"served before: version {report.served_before or 'none'}",
    ]
    if report.challenger is not None:
        c = report.challenger
        how = "trained now" if c.trained else "reused from an earlier try"
        lines.append(f"- challenger: version {c.version} (run `{c.run_id}`, {how})")
    if report.publication is not None:
        p = report.publication
        lines.append(
            f"- served now: version {p.served_version} (registered version "
            f"{p.registered_version}{'' if p.created else ', already published'})"
        )
    if report.aliases_after:
        now = ", ".join(f"`{a}` = {v}" for a, v in sorted(report.aliases_after.items()))
        lines.append(f"- MLflow aliases after the cycle: {now}")
    if report.failed_step:
        lines.append(f"- **failed at step `{report.failed_step}`**: {report.error}")
    if report.decision is not None:
        verdict = "passed" if report.decision.passed else "failed"
        first = ""
        if report.decision.champion is None:
            first = " (first model: absolute thresholds only)"
        lines += ["", f"## Gate: {verdict}{first}", "", report.decision.to_markdown()]
        lines += ["", _metrics_table(report.decision.challenger, report.decision.champion)]
    if report.infra is not None:
        infra = report.infra
        lines += ["", f"## Infra-validation: {'passed' if infra.passed else 'failed'}", ""]
        lines += [f"- {k}: {v:.3f}" for k, v in sorted(infra.metrics().items())]
        lines += [f"- problem: {p}" for p in infra.problems]
    lines += ["", "## Wall time by step", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.2f} |" for step, seconds in report.steps.items()]
    lines.append(f"| total | {sum(report.steps.values()):.2f} |")
    return "\n".join(lines) + "\n"


def _metrics_table(challenger: dict, champion: dict | None) -> str:
    rows = ["| metric | challenger | champion |", "|---|---|---|"]
    for key in sorted(challenger):
        other = "n/a" if not champion or key not in champion else f"{champion[key]:.4f}"
        rows.append(f"| {key} | {challenger[key]:.4f} | {other} |")
    return "\n".join(rows)
