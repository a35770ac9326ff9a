"""Wall time of the same N-trial study with 1 and with K Dask workers, the pruner off.

    PYTHONPATH=. python benchmarks/tuning/parallel.py [--model cnn] [--dataset digits]
        [--trials 6] [--parallel 2] [--epochs 3]

Each measurement is a fresh project folder under artifacts/benchmarks/tuning/ (untracked) and a
`kerasops tune` process, as a user runs it: `--parallel 1` trains in the command's process,
`--parallel K` on a local Dask cluster of K worker processes through Prefect. The pruner is off
so both runs train the same number of epochs. (The tuned config against the shipped preset, and
the same ratio with pruning on: `benchmarks/tuning/tuned_vs_preset.py`.)
Writes artifacts/benchmarks/tuning/<model>-<dataset>.json; prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
OUT = ROOT / "artifacts" / "benchmarks" / "tuning"
SPACES = {
    "cnn": {
        "dropout": {"type": "float", "low": 0.1, "high": 0.5},
        "dense_units": {"type": "categorical", "choices": [32, 64, 128]},
        "train.learning_rate": {"type": "log_float", "low": 3.0e-4, "high": 3.0e-3},
    },
    "transformer": {
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "train.learning_rate": {"type": "log_float", "low": 3.0e-4, "high": 3.0e-3},
    },
    "mlp": {
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "train.learning_rate": {"type": "log_float", "low": 1.0e-3, "high": 1.0e-2},
    },
}


def project(folder: Path, model: str) -> Path:
    """A params.yaml in `folder`: the repository's, its paths inside `folder`, the pruner off."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = {
        "artifacts": "artifacts",
        "raw_data": "data/raw",
        "prepared_data": "data/prepared",
    }
    params["tracking"] = {"experiment": "tuning-benchmark", "mlflow_evaluate": False}
    params["tuning"] = {
        model: {
            "objective": "val_accuracy",
            "direction": "maximize",
            "pruner": "none",
            "space": SPACES[model],
        }
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def kerasops(folder: Path, *args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kerasops", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"kerasops {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=sorted(SPACES))
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    fixed = ["--set", f"epochs={args.epochs}"]
    result: dict = {
        "model": args.model,
        "dataset": args.dataset,
        "trials": args.trials,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "runs": {},
    }
    for workers in (1, args.parallel):
        folder = project(OUT / f"{args.model}-{args.dataset}-{workers}", args.model)
        shutil.rmtree(folder / "artifacts", ignore_errors=True)
        kerasops(folder, "prepare", args.dataset)  # not part of the measurement
        load = os.getloadavg()
        tune = ["tune", args.model, "--dataset", args.dataset, "--trials", str(args.trials)]
        seconds, stdout = kerasops(folder, *tune, "--parallel", str(workers), *fixed)
        result["runs"][str(workers)] = {
            "wall_seconds": round(seconds, 1),
            "load_average_before": [round(v, 2) for v in load],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "summary": [
                line for line in stdout.splitlines() if line.startswith(("study", "best", "  "))
            ],
        }
        print(f"{workers} worker(s): {seconds:.1f} s", flush=True)
    one, many = (result["runs"][str(w)]["wall_seconds"] for w in (1, args.parallel))
    result["speedup"] = round(one / many, 2)

    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"{args.model}-{args.dataset}.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
