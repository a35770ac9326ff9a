"""The monitoring flow: the monitor step as a Prefect task, its report as a markdown artifact,
and its verdict as a Prefect event, `kerasops.drift.detected` or `kerasops.drift.none`, about
the resource `kerasops.model.<name>`. A deployment trigger on the drift event (prefect.yaml's
retraining deployments, or `kerasops schedule --monitor`) starts the retraining deployment:
the loop closes on Prefect's own machinery, with no process of kerasops' watching in between.

Too little logged traffic in the window is no verdict: the run ends Completed in the state
`TooLittleTraffic`, with the reason as its message, and emits no event.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, serve
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.states import Completed, State

from kerasops.pipelines.config import load_params
from kerasops.pipelines.flows.failures import params_file, user_errors_fail
from kerasops.pipelines.flows.retraining import check_cron, retraining_flow
from kerasops.pipelines.flows.runner import PrefectRunner
from kerasops.pipelines.steps.monitor import MonitorReport, TooLittleTraffic, monitor_model

DRIFT = "kerasops.drift.detected"
NO_DRIFT = "kerasops.drift.none"
NO_VERDICT = "TooLittleTraffic"  # the state name of a run with too few logged requests


def model_resource(model: str) -> str:
    """The id of a served model as a Prefect event resource."""
    return f"kerasops.model.{model}"


def drift_event(report: MonitorReport, report_path: str) -> str:
    """Emit the report's verdict as a Prefect event (related to the flow run); its name."""
    name = DRIFT if report.drifted else NO_DRIFT
    emit_event(
        event=name,
        resource={
            "prefect.resource.id": model_resource(report.model),
            "prefect.resource.name": report.model,
            "kerasops.dataset": report.dataset,
        },
        payload={
            "drifted": list(report.drifted),
            "psi": report.scores,
            "threshold_psi": report.threshold,
            "requests": report.records,
            "rows": report.rows,
            "versions": list(report.versions),
            "mlflow_run_id": report.run_id,
            "report": report_path,
        },
    )
    return name


@flow(name="monitoring")
def monitoring_flow(
    model: str,
    since: str | None = "1h",
    dataset: str | None = None,
    params_path: str = "params.yaml",
) -> MonitorReport | State | None:
    """Monitor `model`'s logged traffic of the last `since` (all with None) and emit the
    verdict as an event. A user mistake fails the run with one line; too little traffic ends
    it in the state `TooLittleTraffic`, without an event."""

    def look() -> State:
        params = load_params(params_file(params_path))
        runner = PrefectRunner(params, retries=False)
        try:
            report = runner.run(monitor_model, params, model, since, dataset)
        except TooLittleTraffic as exc:
            get_run_logger().warning("no verdict: %s", exc)
            return Completed(name=NO_VERDICT, message=f"no verdict: {exc}")
        path = str(params.path("artifacts") / "monitoring" / f"{report.model}.md")
        runner.report(f"monitoring-{model}", report.to_markdown(), f"Monitoring {model}")
        event = runner.run(drift_event, report, path)
        verdict = f"drift in {', '.join(report.drifted)}" if report.drifted else "no drift"
        get_run_logger().info("%s (%s sent)", verdict, event)
        return Completed(message=f"{verdict} ({event})", data=report)

    return user_errors_fail(look)


def drift_trigger(model: str, parameters: dict[str, Any]) -> DeploymentEventTrigger:
    """A trigger that runs its deployment with `parameters` on each drift event of `model`
    (the same trigger prefect.yaml declares for its retraining deployments)."""
    return DeploymentEventTrigger(
        name=f"retrain {model} on drift",
        expect={DRIFT},
        match={"prefect.resource.id": model_resource(model)},
        posture="Reactive",
        threshold=1,
        parameters=parameters,
    )


def serve_monitored_schedule(
    name: str,
    cron: str,
    parameters: dict[str, Any],
    served: str,
    monitor_cron: str,
    since: str | None,
) -> None:
    """Serve, in this process (Ctrl-C stops), the retraining flow as deployment `name` on
    `cron` and on each drift event of `served`, and the monitoring flow of `served` as
    `monitor-<served>` on `monitor_cron`. The trigger needs a Prefect server (PREFECT_API_URL,
    or local mode's temporary server, which runs the trigger services too)."""
    on_drift = drift_trigger(served, {**parameters, "force": True, "fresh": True})
    monitor = {"model": served, "since": since, "params_path": parameters["params_path"]}
    serve(
        retraining_flow.to_deployment(
            name=name, cron=check_cron(cron), parameters=parameters, triggers=[on_drift]
        ),
        monitoring_flow.to_deployment(
            name=f"monitor-{served}", cron=check_cron(monitor_cron), parameters=monitor
        ),
    )
