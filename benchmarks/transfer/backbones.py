"""Every transfer backbone on digits, side by side in one run: build, a short two-phase fit,
save/reload equality. Records parameters and seconds, and times relative to mobilenet_v2.

    PYTHONPATH=. python benchmarks/transfer/backbones.py [--backbones a,b] [--examples 256]

Weights are random (`weights: none`; this machine has no network), so accuracies say nothing
about ImageNet features; the point is that each backbone builds, trains in both phases, keeps
BatchNorm frozen and round-trips through `.keras`. Results go to
benchmarks/transfer/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from kerasops.data import Split
from kerasops.models import build_model
from kerasops.models.recipe import data_input_spec as input_spec
from kerasops.models.training import TrainConfig, compile_model, fit, trainable_count
from kerasops.models.transfer import (
    BACKBONES,
    TransferConfig,
    backbone_of,
    is_batchnorm,
    start_fine_tuning,
)
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps.prepare import ensure_prepared

HERE = Path(__file__).parent


def run_backbone(
    name: str, prepared, train: TrainConfig, folder: Path, fine_tune_layers: int
) -> dict:
    """Build `name` at its smallest size, fit phase 1 and phase 2 one epoch each, reload."""
    spec = input_spec(prepared, train)
    config = TransferConfig.from_dict(
        {
            "inputs": spec.to_dict(),
            "backbone": name,
            "weights": "none",
            "image_size": BACKBONES[name].min_size,
            "fine_tune_layers": fine_tune_layers,
        }
    )
    keras.utils.set_random_seed(0)
    started = time.monotonic()
    model = compile_model(build_model("transfer", config), "classification", train)
    built = time.monotonic()
    phase1_trainable = trainable_count(model)
    fit(model, prepared, train, [])
    fitted1 = time.monotonic()
    norms = [layer for layer in backbone_of(model).layers if is_batchnorm(layer)]
    before = [w.numpy() for layer in norms for w in layer.weights]
    start_fine_tuning(model, config, prepared, train)
    phase2_trainable = trainable_count(model)
    fit(model, prepared, train, [])
    fitted2 = time.monotonic()
    after = [w.numpy() for layer in norms for w in layer.weights]
    x = prepared.splits["test"].x[:32]
    model.save(folder / f"{name}.keras")
    reloaded = keras.saving.load_model(folder / f"{name}.keras")
    gap = float(np.abs(reloaded.predict(x, verbose=0) - model.predict(x, verbose=0)).max())
    return {
        "backbone": name,
        "image_size": config.size,
        "fine_tune_layers": fine_tune_layers,
        "params": int(model.count_params()),
        "phase1_trainable_params": phase1_trainable,
        "phase2_trainable_params": phase2_trainable,
        "build_seconds": round(built - started, 2),
        "phase1_epoch_seconds": round(fitted1 - built, 2),
        "phase2_epoch_seconds": round(fitted2 - fitted1, 2),
        "batchnorm_unchanged": all(map(np.array_equal, before, after)),
        "reload_max_abs_diff": gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--examples", type=int, default=256, help="train/val/test examples")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fine-tune-layers", type=int, default=30)
    parser.add_argument("--output", default=str(HERE / "results.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    prepared = ensure_prepared(params, "digits")
    n = args.examples
    splits = {k: Split(s.x[:n], s.y[:n]) for k, s in prepared.splits.items()}
    prepared = dataclasses.replace(prepared, splits=splits)
    train = TrainConfig(epochs=1, batch_size=64)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backbones.split(","):
            try:
                row = run_backbone(name, prepared, train, Path(folder), args.fine_tune_layers)
            except Exception as exc:  # noqa: BLE001 - a survey records failures and goes on
                row = {"backbone": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
            row["fine_tune_layers"] = args.fine_tune_layers
            print(json.dumps(row), flush=True)
            results.append(row)
    base = next((r for r in results if r["backbone"] == "mobilenet_v2" and "error" not in r), None)
    for row in results:
        if base and "error" not in row:
            total = row["phase1_epoch_seconds"] + row["phase2_epoch_seconds"]
            reference = base["phase1_epoch_seconds"] + base["phase2_epoch_seconds"]
            row["fit_time_vs_mobilenet_v2"] = round(total / reference, 2)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
