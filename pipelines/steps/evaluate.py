"""The evaluate step: held-out metrics of a trained model, always through its family's recipe
(the same scoring the train step and the retraining gate use)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from kerasops.data import PreparedData, load_prepared
from kerasops.data.errors import DataError
from kerasops.models import get_family
from kerasops.models.evaluation import Evaluation
from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.training.outputs import read_run_config


def score(
    model: keras.Model, run_config: Mapping[str, Any], prepared: PreparedData, split: str = "test"
) -> Evaluation:
    """Metrics of `model` (as trained or as served) on one split, by its family's recipe.

    `run_config` is the run's `config.json`: its `model` names the family and its
    `model_config` is the typed config the model was trained with.
    """
    if "model" not in run_config:
        raise DataError("the model's config.json does not name its family; cannot score it")
    family = get_family(run_config["model"])
    saved = run_config.get("model_config")
    config = family.config.from_dict(saved) if saved else None
    return family.recipe.evaluate(model, prepared, config, split)


def run_dir(params: Params, model: str, dataset: str) -> Path:
    """`artifacts/runs/<model>-<dataset>/`: the last good run of a model on a dataset."""
    return params.path("artifacts") / "runs" / f"{model}-{dataset}"


@named("evaluate")
def evaluate_run(params: Params, model: str, dataset: str) -> dict[str, float]:
    """Re-score the saved model of `model` on `dataset`'s test split; write
    `artifacts/metrics/<model>-<dataset>.json`, the learning curves
    `artifacts/plots/curves/<model>-<dataset>.csv` and, for a classifier, its test predictions
    `artifacts/plots/confusion/<model>-<dataset>.csv` (what `dvc metrics` and `dvc plots`
    read)."""
    folder = run_dir(params, model, dataset)
    if not (folder / "model.keras").is_file():
        raise DataError(f"{folder / 'model.keras'} does not exist; train it first")
    prepared = load_prepared(dataset, params.path("prepared_data"))
    loaded = keras.saving.load_model(folder / "model.keras")
    evaluation = score(loaded, {**read_run_config(folder), "model": model}, prepared)
    metrics = {k: round(float(v), 6) for k, v in evaluation.metrics.items()}
    artifacts = params.path("artifacts")
    for name in ("metrics", "plots/curves", "plots/confusion"):
        (artifacts / name).mkdir(parents=True, exist_ok=True)
    target = artifacts / "metrics" / f"{folder.name}.json"
    target.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if (folder / "history.csv").is_file():
        shutil.copyfile(folder / "history.csv", artifacts / "plots/curves" / f"{folder.name}.csv")
    if evaluation.confusion is not None:
        confusion_rows(evaluation, artifacts / "plots/confusion" / f"{folder.name}.csv")
    return metrics


def confusion_rows(evaluation: Evaluation, path: Path) -> None:
    """One `actual,predicted` row per test example, from the confusion matrix's counts: what
    DVC's `confusion` template counts."""
    rows = ["actual,predicted"]
    for i, counts in enumerate(evaluation.confusion):
        for j, count in enumerate(counts):
            rows += [f"{evaluation.classes[i]},{evaluation.classes[j]}"] * int(count)
    path.write_text("\n".join(rows) + "\n")
