"""The export step: a trained model as the next SavedModel version of the serving repository,
in TF Serving's layout, with warmup requests made of real held-out examples, and (a model over
feature rows) the names of its input's columns from its training data's manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import named
from kerasops.serving.config import ServingConfig
from kerasops.serving.export import ExportResult, export_saved_model
from kerasops.serving.sources import ModelSource, dataset_examples


@named("export")
def export_model(
    params: Params,
    source: ModelSource,
    name: str | None = None,
    version: int | None = None,
    labels: Sequence[str] = (),
    serving: ServingConfig | None = None,
    info: Mapping[str, Any] | None = None,
    prepared_root: Path | None = None,
) -> ExportResult:
    """Export `source` (a run folder or an MLflow model) as version `version` (default: the
    next) of served model `name` (default `<model>-<dataset>`), with `labels` on it.

    `serving` replaces params.yaml's `serving:` section (a staging repository, say), and
    `prepared_root` its `paths.prepared_data` (where warmup examples come from); `info` is
    added to the version's self-description. Raises ExportError on a clash.
    """
    serving = serving or params.serving
    prepared_root = prepared_root or params.path("prepared_data")
    examples, classes = dataset_examples(
        source.run_config, prepared_root, serving.num_warmup_records
    )
    return export_saved_model(
        source.model,
        name or source.default_name(),
        config=serving,
        version=version,
        warmup_examples=examples,
        class_names=class_names(source.model, classes),
        feature_names=feature_names(source.model, source.run_config),
        labels=labels,
        info={**source.info, "run_config": source.run_config, **(info or {})},
    )


def class_names(model: Any, classes: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The dataset's class names when they match the model's output width."""
    width = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    return classes if classes and len(classes) == width else None


def feature_names(model: Any, run_config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The training data's feature column names (its manifest, in the run config) when the
    model takes rows of exactly those features (B, F)."""
    names = tuple((run_config.get("data") or {}).get("feature_names") or ())
    width = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    return names if names and width == (len(names),) else None
