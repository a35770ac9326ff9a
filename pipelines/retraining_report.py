"""The markdown record of one retraining cycle (the Prefect artifact and `cycle.md` in MLflow)."""

from __future__ import annotations

from typing import Any


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
