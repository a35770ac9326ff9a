"""The rollback step: the `previous` champion made champion again and served as the newest
version (re-exported from the registry when the repository lost it)."""

from __future__ import annotations

import dataclasses

from kerasops.pipelines.config import Params
from kerasops.pipelines.retraining.infra import stage_export
from kerasops.pipelines.steps.publish import (
    Publication,
    RetrainingError,
    publication,
    served_source,
)
from kerasops.pipelines.tracking.registry import (
    CHAMPION,
    PREVIOUS,
    aliases,
    client,
    set_aliases,
)


@dataclasses.dataclass(frozen=True)
class Rollback:
    name: str
    champion: str  # the registered version serving again
    demoted: str | None
    publication: Publication


def rollback(params: Params, name: str) -> Rollback:
    """Make `previous` the champion again and republish it as the newest served version; the
    demoted version is tagged `kerasops.rolled_back`. Raises RetrainingError when there is no
    `previous` version."""
    current = aliases(name)
    if PREVIOUS not in current:
        raise RetrainingError(
            f"{name} has no 'previous' version to roll back to "
            f"(aliases: {', '.join(f'{a}={v}' for a, v in current.items()) or 'none'})"
        )
    target, demoted = current[PREVIOUS], current.get(CHAMPION)
    source = served_source(params, name, target) or stage_export(params, name, target)
    with publication(params, name, source, target) as published:
        set_aliases(name, {CHAMPION: target, PREVIOUS: None})
        if demoted:
            client().set_model_version_tag(name, demoted, "kerasops.rolled_back", "true")
    return Rollback(name, target, demoted, published)
