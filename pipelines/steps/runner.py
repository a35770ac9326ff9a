"""How a sequence of steps runs: `StepRunner` is what the plain sequence functions (the
pipeline, the retraining cycle) call each step through. `DirectRunner` calls the functions
themselves, so every sequence runs without Prefect; the Prefect flows pass a runner that makes
each step a Prefect task (`kerasops.pipelines.flows.runner`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def named(name: str) -> Callable[[F], F]:
    """Give a step the name its runs carry in a flow (a Prefect task's name, `train` for
    `train_model`); without one, a step is named after its function."""

    def name_step(step: F) -> F:
        step.step_name = name  # type: ignore[attr-defined]
        return step

    return name_step


def step_name(step: Callable[..., Any]) -> str:
    """The name a step's runs carry: its `named` name, else its function's, dashed."""
    return getattr(step, "step_name", step.__name__.replace("_", "-"))


@dataclasses.dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one of several concurrent calls of a step gave: its value, or the error it raised."""

    value: T | None = None
    error: BaseException | None = None

    def result(self) -> T:
        """The value, or the step's error raised again."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class StepRunner(Protocol):
    """Runs the steps of a sequence."""

    def run(self, step: Callable[..., T], *args: Any) -> T:
        """Run one step now and return its result (its error propagates)."""
        ...

    def map(self, step: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[Outcome[T]]:
        """Run `step` once per argument tuple, concurrently where the runner allows; every
        call's outcome, in order."""
        ...

    def report(self, key: str, markdown: str, description: str) -> None:
        """Publish a sequence's markdown report under `key`."""
        ...

    def tags(self) -> dict[str, str]:
        """Lineage tags naming what runs the steps (a Prefect flow run), for MLflow runs."""
        ...


def report_key(key: str) -> str:
    """A report key of lowercase letters, digits and dashes (what Prefect artifacts allow)."""
    return re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")


class DirectRunner:
    """Calls each step directly; `map` uses up to `max_parallel` threads; reports are written to
    `<reports>/<key>.md` when a folder is given."""

    def __init__(self, max_parallel: int = 1, reports: Path | None = None) -> None:
        self.max_parallel = max_parallel
        self.reports = reports

    def run(self, step: Callable[..., T], *args: Any) -> T:
        return step(*args)

    def map(self, step: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[Outcome[T]]:
        def call(args: tuple[Any, ...]) -> Outcome[T]:
            try:
                return Outcome(value=step(*args))
            except Exception as exc:  # noqa: BLE001  (collected: the caller decides)
                return Outcome(error=exc)

        if self.max_parallel <= 1 or len(calls) <= 1:
            return [call(args) for args in calls]
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            return list(pool.map(call, calls))

    def report(self, key: str, markdown: str, description: str) -> None:
        if self.reports is not None:
            self.reports.mkdir(parents=True, exist_ok=True)
            (self.reports / f"{report_key(key)}.md").write_text(markdown)

    def tags(self) -> dict[str, str]:
        return {}
