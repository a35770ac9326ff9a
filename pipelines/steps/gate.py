"""The gate step: the challenger's and the champion's held-out metrics, scored the same way on
the same split of the current data, judged by the rules of `retraining.gate` (the blessing of
TFX's Evaluator): absolute thresholds always, change thresholds against a champion."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from kerasops.data import load_prepared
from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.config.retraining import LIVE_METRICS, GateRule
from kerasops.pipelines.steps.evaluate import score
from kerasops.pipelines.steps.monitor import compare_report_path, served_version
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.tracking.registry import load_version


@dataclasses.dataclass(frozen=True)
class GateCheck:
    """One threshold of one metric, and whether the challenger met it."""

    metric: str
    rule: str  # minimum | maximum | max_regression | min_improvement
    threshold: float
    value: float | None  # the challenger's metric, or its change against the champion
    passed: bool
    note: str = ""  # why the value is missing, when it is

    def describe(self) -> str:
        if self.value is None:
            return f"{self.metric}: {self.note or 'not computed for this model'}"
        op = {"minimum": ">=", "maximum": "<=", "max_regression": ">= -"}.get(self.rule, ">=")
        what = self.metric if self.rule in ("minimum", "maximum") else f"change in {self.metric}"
        return f"{what} = {self.value:.4f} (needs {op}{self.threshold:g})"


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The blessing: passed only when every check passed."""

    passed: bool
    checks: tuple[GateCheck, ...]
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def reasons(self) -> list[str]:
        return [check.describe() for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "challenger": self.challenger,
            "champion": self.champion,
        }

    def to_markdown(self) -> str:
        lines = ["| metric | rule | threshold | value | passed |", "|---|---|---|---|---|"]
        for c in self.checks:
            value = "n/a" if c.value is None else f"{c.value:.4f}"
            mark = "yes" if c.passed else "**no**"
            lines.append(f"| {c.metric} | {c.rule} | {c.threshold:g} | {value} | {mark} |")
        return "\n".join(lines)


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    rules: Mapping[str, GateRule],
) -> GateDecision:
    """Judge the challenger: absolute thresholds always, change thresholds against a champion.

    Changes are measured so that positive is better (`direction` says which way that is).
    """
    checks: list[GateCheck] = []
    for metric, rule in rules.items():
        value = challenger.get(metric)
        for kind in ("minimum", "maximum"):
            bound = getattr(rule, kind)
            if bound is not None:
                ok = value is not None and (value >= bound if kind == "minimum" else value <= bound)
                checks.append(GateCheck(metric, kind, bound, value, ok))
        if champion is None:
            continue
        reference = champion.get(metric)
        change = None
        if value is not None and reference is not None:
            change = value - reference if rule.direction == "higher" else reference - value
        if rule.max_regression is not None:
            ok = change is not None and change >= -rule.max_regression
            checks.append(GateCheck(metric, "max_regression", rule.max_regression, change, ok))
        if rule.min_improvement is not None:
            ok = change is not None and change >= rule.min_improvement
            checks.append(GateCheck(metric, "min_improvement", rule.min_improvement, change, ok))
    passed = bool(checks) and all(c.passed for c in checks)
    return GateDecision(passed, tuple(checks), dict(challenger), dict(champion or {}) or None)


def evaluate_version(params: Params, dataset: str, name: str, version: str, split: str) -> dict:
    """Metrics of a registered version on one split of the current prepared data, scored by
    its family's recipe."""
    source = load_version(name, version)
    prepared = load_prepared(dataset, params.path("prepared_data"))
    return score(source.model, source.run_config, prepared, split).metrics


@named("evaluate-and-gate")
def evaluate_and_gate(
    params: Params, model: str, dataset: str, name: str, challenger: str, champion: str | None
) -> GateDecision:
    """Score registered versions `challenger` and `champion` (if any) of `name` on the same
    held-out split of the current data, and judge the challenger by the rules of family
    `model` (`retraining.model_gates.<model>`, else `retraining.gate`)."""
    config = params.retraining
    rules = config.rules(model)
    ours = evaluate_version(params, dataset, name, challenger, config.split)
    theirs = None
    if champion is not None:
        theirs = evaluate_version(params, dataset, name, champion, config.split)
    return judge(params, name, ours, theirs, rules)


def judge(
    params: Params,
    name: str,
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    rules: Mapping[str, GateRule],
) -> GateDecision:
    """`gate` with the live_* metrics of served model `name`'s shadow-traffic comparison
    report added to the challenger's; a live rule without a report fails, saying so."""
    live, missing = live_metrics(params, name, rules)
    decision = gate({**challenger, **live}, champion, rules)
    if not missing:
        return decision
    checks = tuple(
        dataclasses.replace(c, note=missing) if c.metric in LIVE_METRICS and c.value is None else c
        for c in decision.checks
    )
    return dataclasses.replace(decision, checks=checks)


def live_metrics(
    params: Params, name: str, rules: Mapping[str, GateRule]
) -> tuple[dict[str, float], str]:
    """The live_* metrics the rules ask for, from the shadow-traffic comparison report of
    served model `name`, and why they are missing ("" when found or not asked for): no
    report, an unreadable one, one older than `monitoring.compare_max_age_h`, or one that
    compared other versions than its champion and challenger name now."""
    if not any(metric in LIVE_METRICS for metric in rules):
        return {}, ""
    path = compare_report_path(params, name)
    hint = f"run `kerasops monitor {name} --compare champion challenger` first"
    try:
        report = json.loads(path.read_text())
        metrics = {k: float(v) for k, v in report["metrics"].items()}
        created, compared = float(report["created_at"]), tuple(report["versions"])
        names = (str(report["champion"]), str(report["challenger"]))
    except FileNotFoundError:
        return {}, f"no shadow-traffic comparison report at {path}: {hint}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"unreadable shadow-traffic comparison report {path} ({exc}): {hint}"
    hours = (time.time() - created) / 3600
    bound = params.monitoring.compare_max_age_h
    if hours > bound:
        return {}, (
            f"the shadow-traffic comparison report {path} is {hours:.1f} h old, older than "
            f"monitoring.compare_max_age_h = {bound:g}: {hint.replace(' first', ' again')}"
        )
    try:
        served = tuple(served_version(params, name, n) for n in names)
    except KerasopsError as exc:
        return {}, f"the shadow-traffic comparison report {path} cannot be checked: {exc}"
    if served != compared:
        return {}, (
            f"the shadow-traffic comparison report {path} compared versions "
            f"{compared[0]} ({names[0]}) and {compared[1]} ({names[1]}), but {names[0]} and "
            f"{names[1]} are versions {served[0]} and {served[1]} now: "
            f"{hint.replace(' first', ' again')}"
        )
    return metrics, ""
