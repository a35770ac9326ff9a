"""The retraining cycle as one plain function: a challenger replaces the served champion only
when it is better and proven to serve.

    detect data version -> (no new data: stop) -> validate -> train challenger -> register
    -> evaluate challenger and champion, gate -> infra-validate -> promote (publish + aliases)

`retrain` runs each step through a `StepRunner`: directly by default, as Prefect tasks from the
retraining flow, which only calls it. Every cycle, whatever its outcome, is recorded as an MLflow
run (`retrain-<name>`) and a report (`retraining-<name>`), with the wall time of each step.

State lives in two places, and each step changes at most one of them at a time: the MLflow
registry (versions tagged with the data version and params hash that made them, the aliases,
the gate's verdict) and the serving repository (numbered versions naming the registered version
they hold). Retrying a cycle is safe: an existing run or version for the same inputs is reused,
publishing an already-served registered version is a no-op, and a failure after publishing
withdraws the new served version.
"""

from __future__ import annotations

from pathlib import Path

from kerasops.config import require
from kerasops.pipelines.config import Params, RunConfig
from kerasops.pipelines.retraining.challenger import (
    detect_new_data,
    record_verdict,
    train_and_register,
)
from kerasops.pipelines.retraining.infra import stage_and_validate
from kerasops.pipelines.retraining.report import CycleReport, record_cycle
from kerasops.pipelines.steps.gate import evaluate_and_gate
from kerasops.pipelines.steps.publish import latest_served, promote
from kerasops.pipelines.steps.runner import DirectRunner, StepRunner, named
from kerasops.pipelines.steps.validate import validate
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.registry import CHAMPION, aliases
from kerasops.pipelines.training.distribute import require_one_process


@named("start-cycle")
def start_cycle(params: Params, run: RunConfig) -> CycleReport:
    """A new cycle's record, with the champion and served version it starts from."""
    require_one_process(run.train)
    require(
        bool(params.retraining.rules(run.model)),
        "retraining.gate in params.yaml lists no metric: add e.g. "
        "test_accuracy: {minimum: 0.8, max_regression: 0.01}",
    )
    tracking.configure(params)
    name = params.retraining.model_name(run.model, run.dataset)
    return CycleReport(
        name,
        run.model,
        run.dataset,
        champion_before=aliases(name).get(CHAMPION),
        served_before=latest_served(params, name),
    )


def retrain(
    params: Params,
    run: RunConfig,
    force: bool = False,
    fresh: bool = False,
    runner: StepRunner | None = None,
) -> CycleReport:
    """One champion/challenger cycle for `run`. `force` runs it even on a data version a
    cycle already decided on (a run with the same data and config is still reused, so a
    retried cycle never trains twice); `fresh` trains a new challenger even then. Returns the
    cycle's record; a failed step's error propagates after the record is written."""
    runner = runner or DirectRunner(reports=params.path("artifacts") / "reports")
    report = runner.run(start_cycle, params, run)
    try:
        with report.step("detect"):
            found = runner.run(detect_new_data, params, run.dataset, report.name)
            report.data_version, new_data = found
        if not (new_data or force):
            report.outcome = "no-new-data"
            return report
        with report.step("validate"):
            runner.run(validate, params, run.dataset)
        with report.step("train"):
            report.challenger = runner.run(
                train_and_register,
                params,
                run,
                report.name,
                report.data_version,
                runner.tags(),
                fresh,
            )
        if report.challenger.version == report.champion_before:
            report.outcome = "already-champion"
            return report
        return judge_and_promote(params, report, runner)
    finally:
        runner.run(record_cycle, params, report, runner.tags().get("prefect.flow_run_id"))
        description = f"retraining {report.name}: {report.outcome}"
        runner.report(f"retraining-{report.name}", report.to_markdown(), description)


def judge_and_promote(params: Params, report: CycleReport, runner: StepRunner) -> CycleReport:
    """The cycle's second half: gate, infra-validate, promote; a failed check rejects."""
    challenger = report.challenger
    with report.step("evaluate"):
        report.decision = runner.run(
            evaluate_and_gate,
            params,
            report.model,
            report.dataset,
            report.name,
            challenger.version,
            report.champion_before,
        )
    if not report.decision.passed:
        runner.run(record_verdict, challenger, "rejected")
        report.outcome = "rejected"
        return report
    with report.step("infra_validate"):
        report.infra = runner.run(stage_and_validate, params, challenger)
    if not report.infra.passed:
        runner.run(record_verdict, challenger, "infra_failed")
        report.outcome = "infra-failed"
        return report
    with report.step("promote"):
        report.publication = runner.run(promote, params, challenger, Path(report.infra.staged))
    report.outcome = "promoted"
    return report
