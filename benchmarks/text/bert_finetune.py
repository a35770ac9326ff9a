"""BERT-style pretraining then fine-tuning against training from scratch, side by side in one run.

    PYTHONPATH=. python benchmarks/text/bert_finetune.py [--budgets 50,200,0] [--seeds 42,1,2]
        [--all-seeds 42] [--pretrain-epochs N | --backbone RUN_FOLDER] [--update-results]

One `bert_masked_lm` run pretrains the encoder on bbc_news' training texts (labels unused), with
params.yaml's recipe (`--pretrain-epochs` overrides its epochs; `--backbone` reuses a pretraining
run folder of that recipe instead, its metrics read from its metrics.json). Then, for each label
budget (training texts with labels; 0: all) and each seed (the seed draws the labelled subset and
the initial weights; `--all-seeds`: those of the all-labels budget, whose labelled set the seed
does not change), `bert_classifier` trains twice under the same seed, split and schedule:
from that backbone (phase 1 frozen, phase 2 unfrozen) and with `backbone: none` (the same
architecture and input, untrained). Every run goes through the train step, so MLflow holds them
all, each fine-tune naming its backbone's run. Writes artifacts/benchmarks/text/bert_finetune.json
(untracked), or with --update-results benchmarks/text/bert_finetune.json; prints the markdown
table RESULTS.md quotes (means over the seeds, and their spread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def project(folder: Path, pretrain_epochs: int | None) -> Path:
    """A params.yaml in `folder`: the repository's, its paths inside `folder`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = {
        "artifacts": "artifacts",
        "raw_data": "data/raw",
        "prepared_data": "data/prepared",
    }
    params["tracking"] = {"experiment": "bert-finetune-benchmark", "mlflow_evaluate": False}
    if pretrain_epochs is not None:
        params["models"]["bert_masked_lm"]["train"]["epochs"] = pretrain_epochs
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder / "params.yaml"


def summary(runs: list[dict]) -> dict:
    """Mean and spread (population standard deviation) of each metric over the seeds' runs."""
    out: dict = {"runs": runs}
    for key in ("test_accuracy", "test_macro_f1", "seconds"):
        values = [run[key] for run in runs]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.pstdev(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="50,200,0")
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--all-seeds", default="", help="seeds of the all-labels budget")
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--backbone", default="", help="a bert_masked_lm run folder to reuse")
    parser.add_argument("--update-results", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    all_seeds = [int(s) for s in args.all_seeds.split(",")] if args.all_seeds else seeds
    load_at_start = os.getloadavg()

    from kerasops.pipelines.config import load_params, resolve_run_config
    from kerasops.pipelines.steps.train import train_model

    reused = Path(args.backbone).resolve() if args.backbone else None
    folder = Path(tempfile.mkdtemp(prefix="bert-bench-"))
    os.chdir(folder)
    params = load_params(project(folder, args.pretrain_epochs))

    def train(model: str, overrides: list[str]) -> tuple[dict, float]:
        started = time.monotonic()
        run = resolve_run_config(params, model, "bbc_news", None, overrides)
        return train_model(params, run).metrics, time.monotonic() - started

    if reused is None:
        pretrained, pretrain_seconds = train("bert_masked_lm", [])
        backbone = folder / "artifacts" / "runs" / "bert_masked_lm-bbc_news"
        pretraining = {**pretrained, "seconds": round(pretrain_seconds, 1)}
    else:
        backbone = reused
        pretraining = {**json.loads((reused / "metrics.json").read_text()), "reused": str(reused)}
    rows = []
    for budget in [int(b) for b in args.budgets.split(",")]:
        chosen = seeds if budget else all_seeds
        row: dict = {"train_examples": budget or "all", "seeds": chosen}
        for name, path in (("fine_tuned", str(backbone)), ("scratch", "none")):
            runs = []
            for seed in chosen:
                overrides = [f"backbone={path}", f"train_examples={budget}", f"seed={seed}"]
                metrics, seconds = train("bert_classifier", overrides)
                runs.append({
                    "seed": seed,
                    "test_accuracy": metrics["test_accuracy"],
                    "test_macro_f1": metrics["test_macro_f1"],
                    "seconds": round(seconds, 1),
                })  # fmt: skip
                print(json.dumps({"budget": budget, "model": name, **runs[-1]}), flush=True)
            row[name] = summary(runs)
        row["majority_accuracy"] = metrics["baseline_majority_accuracy"]
        rows.append(row)
    result = {
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "pretraining": pretraining,
        "rows": rows,
    }
    target = HERE if args.update_results else ROOT / "artifacts" / "benchmarks" / "text"
    target.mkdir(parents=True, exist_ok=True)
    (target / "bert_finetune.json").write_text(json.dumps(result, indent=2))
    header = ["labelled texts", "fine-tuned acc", "scratch acc", "fine-tuned F1", "scratch F1"]
    print("| " + " | ".join([*header, "majority", "fine-tuned s", "scratch s"]) + " |")
    print("|---|---|---|---|---|---|---:|---:|")
    for row in rows:
        f, s = row["fine_tuned"], row["scratch"]
        print(
            f"| {row['train_examples']} "
            f"| {f['test_accuracy']:.3f} ± {f['test_accuracy_std']:.3f} "
            f"| {s['test_accuracy']:.3f} ± {s['test_accuracy_std']:.3f} "
            f"| {f['test_macro_f1']:.3f} | {s['test_macro_f1']:.3f} "
            f"| {row['majority_accuracy']:.3f} | {f['seconds']:.0f} | {s['seconds']:.0f} |"
        )
    print(
        f"results: {target / 'bert_finetune.json'} (load average {load_at_start} at the start, "
        f"{result['load_average_end']} at the end)"
    )


if __name__ == "__main__":
    main()
