"""`PrefectRunner`: a StepRunner that runs each step as a Prefect task of the current flow run.

A step that fails for a transient reason is retried `pipeline.retries` times with exponential
backoff from `pipeline.retry_delay_seconds`; a user mistake (`KerasopsError`: bad config,
missing or corrupt data, failed validation) is not, since it would fail the same again.
Reports become markdown artifacts of the flow run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from prefect import Task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import Outcome, report_key, step_name

T = TypeVar("T")


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is a user mistake (KerasopsError): those fail the same again."""
    try:
        state.result()
    except KerasopsError:
        return False
    except Exception:  # noqa: BLE001  (any other failure may be transient)
        return True
    return False


def publish_report(key: str, markdown: str, description: str) -> str:
    """A markdown artifact of the flow run; run as a task, so queries that filter artifacts by
    their task run find it too."""
    create_markdown_artifact(key=key, markdown=markdown, description=description)
    return key


class PrefectRunner:
    """Each step a Prefect task, named as the step is (`train_model` -> `train`).

    `map` submits its calls to the flow's task runner (a thread pool, a Dask cluster), or,
    when `fan_out` names the steps to submit and this one is not among them, runs them one by
    one in the flow's own process (steps that start processes of their own, such as prepare's
    pool, cannot run on a Dask worker)."""

    def __init__(
        self, params: Params, retries: bool = True, fan_out: Collection[str] | None = None
    ) -> None:
        config = params.pipeline
        self.fan_out = fan_out
        self.retries = config.retries if retries else 0
        self.delays = exponential_backoff(backoff_factor=config.retry_delay_seconds)
        self._tasks: dict[Callable[..., Any], Task] = {}

    def task(self, step: Callable[..., T]) -> Task:
        """The Prefect task of `step` (one per step function)."""
        if step not in self._tasks:
            self._tasks[step] = Task(
                step,
                name=step_name(step),
                cache_policy=NO_CACHE,
                retries=self.retries,
                retry_delay_seconds=self.delays,
                retry_condition_fn=retry_on_transient,
            )
        return self._tasks[step]

    def run(self, step: Callable[..., T], *args: Any) -> T:
        return self.task(step)(*args)

    def map(self, step: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[Outcome[T]]:
        if self.fan_out is not None and step_name(step) not in self.fan_out:
            return [self.outcome(step, args) for args in calls]
        futures = [self.task(step).submit(*args) for args in calls]
        wait(futures)
        outcomes: list[Outcome[T]] = []
        for future in futures:
            if future.state.is_completed():
                outcomes.append(Outcome(value=future.result()))
            else:
                error = future.state.result(raise_on_failure=False)
                if not isinstance(error, BaseException):
                    error = KerasopsError(f"{step.__name__} ended {future.state.name}")
                outcomes.append(Outcome(error=error))
        return outcomes

    def outcome(self, step: Callable[..., T], args: tuple[Any, ...]) -> Outcome[T]:
        """One call of `step` as a task in this process: its value or its error."""
        try:
            return Outcome(value=self.run(step, *args))
        except Exception as exc:  # noqa: BLE001  (collected: the caller decides)
            return Outcome(error=exc)

    def report(self, key: str, markdown: str, description: str) -> None:
        self.run(publish_report, report_key(key), markdown, description)

    def tags(self) -> dict[str, str]:
        return {
            "prefect.flow_run_id": str(flow_run.id or ""),
            "prefect.flow_name": str(flow_run.flow_name or ""),
        }
