"""The run folder a training publishes: `artifacts/runs/<model>-<dataset>/` with model.keras,
config.json (the resolved config: the model can be rebuilt from it alone), metrics.json,
evaluation.json, summary.txt, history.csv and the plots. It is written into a staging folder
and swapped in with one rename, so a failed run leaves the last good outputs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from kerasops.data import PreparedData
from kerasops.models import plots
from kerasops.models.evaluation import Evaluation
from kerasops.models.recipe import Recipe


def write_outputs(
    stage: Path,
    model: keras.Model,
    config: dict[str, Any],
    evaluation: Evaluation,
    history: Mapping[str, list[float]],
    prepared: PreparedData,
    recipe: Recipe,
) -> None:
    """Model, config, metrics, history and plots of one run, into the staging folder."""
    model.save(stage / "model.keras")
    (stage / "config.json").write_text(json.dumps(config, indent=2))
    (stage / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
    (stage / "evaluation.json").write_text(json.dumps(evaluation.to_dict(), indent=2))
    with (stage / "summary.txt").open("w") as handle:
        model.summary(print_fn=lambda line, **_: handle.write(line + "\n"))
    write_history_csv(history, stage / "history.csv")
    if history:
        plots.learning_curves(history, stage / "learning_curves.png")
    recipe.write_plots(model, prepared, evaluation, stage)


def write_history_csv(history: Mapping[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV, epochs from 1 (the learning curves `dvc plots` reads)."""
    names = sorted(history)
    rows = ["epoch," + ",".join(names)]
    epochs = len(next(iter(history.values()))) if history else 0
    for epoch in range(epochs):
        rows.append(f"{epoch + 1}," + ",".join(f"{history[n][epoch]:.6g}" for n in names))
    path.write_text("\n".join(rows) + "\n")


def publish_run(stage: Path, run_dir: Path) -> None:
    """Replace `run_dir` with `stage` in one rename; the old outputs go only once it succeeded."""
    old = run_dir.with_name(run_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        run_dir.rename(old)
    stage.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The `config.json` of a run folder ({} when the run wrote none)."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
