"""The publish and promote steps: a validated export served as the next version of the serving
repository (one rename, through the repository's one writer), and the registry aliases moved
to match. A failure after publishing withdraws the new version and restores models.config and
the aliases, so what is served and what `champion` names never disagree for long.

Each served version records the registered version it holds (`registered_version` in
`assets.extra/kerasops_export.json`): publishing a registered version the newest served version
already holds does nothing, so a retried cycle completes without duplicate versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.retraining.challenger import Challenger, record_verdict
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    aliases,
    set_aliases,
)
from kerasops.serving.repository import (
    list_versions,
    publish_version,
    restore_models_config,
    set_labels,
    version_info,
    withdraw_version,
)


class RetrainingError(KerasopsError):
    """A retraining step cannot go on (nothing to roll back to, a broken serving repository)."""


@dataclasses.dataclass(frozen=True)
class Publication:
    served_version: int
    registered_version: str
    created: bool  # False: the latest served version already held it


def served_versions(params: Params, name: str) -> dict[int, str | None]:
    """Served version number -> the registered version it holds (None if not recorded)."""
    base = Path(params.serving.model_repository) / name
    return {
        v: (version_info(base / str(v)).get("registered_version") or None)
        for v in list_versions(base)
    }


def latest_served(params: Params, name: str) -> int | None:
    versions = served_versions(params, name)
    return max(versions) if versions else None


def served_source(params: Params, name: str, registered_version: str) -> Path | None:
    """The newest served version folder holding `registered_version`, if any."""
    base = Path(params.serving.model_repository) / name
    matches = [v for v, r in served_versions(params, name).items() if r == registered_version]
    return base / str(max(matches)) if matches else None


def canary_labels(params: Params, name: str, version: str) -> dict[str, int | None]:
    """Labels for a canary publication of registered `version`: `stable` stays on the newest
    served version holding another registered version."""
    policy = params.serving.version_policy
    if policy.policy == "latest" and policy.num_versions < 2:
        raise RetrainingError(
            "retraining.canary needs two loaded versions: set serving.version_policy."
            "num_versions to 2 or more"
        )
    others = [v for v, r in served_versions(params, name).items() if r != version]
    return {"stable": max(others), "canary": None} if others else {"canary": None}


def publish(
    params: Params,
    name: str,
    source: Path,
    registered_version: str,
    labels: Mapping[str, int | None] | None = None,
) -> Publication:
    """Publish a staged (validated) export as the next served version of `name`, in one rename.

    A no-op (labels aside) when the latest served version already holds `registered_version`.
    `labels` mapped to None point at the published version.
    """
    served = served_versions(params, name)
    if served and served[max(served)] == registered_version:
        wanted = {label: target or max(served) for label, target in (labels or {}).items()}
        if wanted:
            set_labels(params.serving, name, wanted)
        return Publication(max(served), registered_version, False)
    info = {"registered_version": registered_version}
    number = publish_version(params.serving, name, source, labels=labels, info=info)
    return Publication(number, registered_version, True)


def withdraw(params: Params, name: str, served_version: int) -> None:
    """Take a just-published served version away again (the poller falls back to the last)."""
    withdraw_version(params.serving, name, served_version)


@contextlib.contextmanager
def publication(
    params: Params,
    name: str,
    source: Path,
    version: str,
    labels: Mapping[str, int | None] | None = None,
) -> Iterator[Publication]:
    """Publish, then run the body (the alias moves); if anything raises, withdraw the new
    served version, restore models.config and the aliases, and re-raise."""
    before, served_before = aliases(name), latest_served(params, name)
    models_config = Path(params.serving.models_config)
    config_text = models_config.read_text() if models_config.is_file() else None
    try:
        yield publish(params, name, source, version, labels)
    except BaseException:
        served = latest_served(params, name)
        if served is not None and served != served_before:
            withdraw(params, name, served)
        restore_models_config(params.serving, config_text)
        set_aliases(name, {a: before.get(a) for a in (CHAMPION, PREVIOUS, CHALLENGER)})
        raise


@named("promote")
def promote(params: Params, challenger: Challenger, staged: Path) -> Publication:
    """Serve the challenger as the next version, then make it `champion` (old one `previous`).

    With `retraining.canary`, the new served version gets label `canary` and the one served
    before it label `stable` (the version policy must keep both loaded). A failure anywhere
    leaves the aliases and the served versions as they were.
    """
    name, current = challenger.name, aliases(challenger.name)
    canary = params.retraining.canary
    labels = canary_labels(params, name, challenger.version) if canary else {}
    with publication(params, name, staged, challenger.version, labels) as published:
        moves: dict[str, str | None] = {CHALLENGER: None}
        if current.get(CHAMPION) and current[CHAMPION] != challenger.version:
            moves[PREVIOUS] = current[CHAMPION]
        set_aliases(name, moves)
        set_aliases(name, {CHAMPION: challenger.version})
        record_verdict(challenger, "promoted")
    shutil.rmtree(staged.parent.parent.parent, ignore_errors=True)  # <staging>/<name>-v<N>/
    return published
