"""BERT-style pretraining then fine-tuning against training from scratch, side by side in one run.

    PYTHONPATH=. python benchmarks/text/bert_finetune.py [--budgets 50,200,0] [--pretrain-epochs 20]
        [--update-results]

One `bert_masked_lm` run pretrains the encoder on bbc_news' training texts (labels unused); then,
for each label budget (training texts with labels; 0: all), `bert_classifier` trains twice under
the same seed, split and schedule: from that backbone (phase 1 frozen, phase 2 unfrozen) and with
`backbone: none` (the same architecture, untrained). Every run goes through the train step, so
MLflow holds them all, each fine-tune naming its backbone's run. Writes
artifacts/benchmarks/text/bert_finetune.json (untracked), or with --update-results
benchmarks/text/bert_finetune.json; prints the markdown table RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def project(folder: Path, pretrain_epochs: int) -> Path:
    """A params.yaml in `folder`: the repository's, its paths inside `folder`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = {
        "artifacts": "artifacts",
        "raw_data": "data/raw",
        "prepared_data": "data/prepared",
    }
    params["tracking"] = {"experiment": "bert-finetune-benchmark", "mlflow_evaluate": False}
    params["models"]["bert_masked_lm"]["train"]["epochs"] = pretrain_epochs
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder / "params.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="50,200,0")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--update-results", action="store_true")
    args = parser.parse_args()

    from kerasops.pipelines.config import load_params, resolve_run_config
    from kerasops.pipelines.steps.train import train_model

    folder = Path(tempfile.mkdtemp(prefix="bert-bench-"))
    os.chdir(folder)
    params = load_params(project(folder, args.pretrain_epochs))

    def train(model: str, overrides: list[str]) -> tuple[dict, float]:
        started = time.monotonic()
        run = resolve_run_config(params, model, "bbc_news", None, overrides)
        return train_model(params, run).metrics, time.monotonic() - started

    pretrained, pretrain_seconds = train("bert_masked_lm", [])
    backbone = folder / "artifacts" / "runs" / "bert_masked_lm-bbc_news"
    rows = []
    for budget in [int(b) for b in args.budgets.split(",")]:
        row: dict = {"train_examples": budget or "all"}
        for name, path in (("fine_tuned", str(backbone)), ("scratch", "none")):
            metrics, seconds = train(
                "bert_classifier", [f"backbone={path}", f"train_examples={budget}"]
            )
            row[name] = {
                "test_accuracy": metrics["test_accuracy"],
                "test_macro_f1": metrics["test_macro_f1"],
                "seconds": round(seconds, 1),
            }
        row["majority_accuracy"] = metrics["baseline_majority_accuracy"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "pretraining": {**pretrained, "seconds": round(pretrain_seconds, 1)},
        "rows": rows,
    }
    target = HERE if args.update_results else ROOT / "artifacts" / "benchmarks" / "text"
    target.mkdir(parents=True, exist_ok=True)
    (target / "bert_finetune.json").write_text(json.dumps(result, indent=2))
    header = ["labelled texts", "fine-tuned acc", "scratch acc", "fine-tuned F1", "scratch F1"]
    print("| " + " | ".join([*header, "majority"]) + " |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        f, s = row["fine_tuned"], row["scratch"]
        print(
            f"| {row['train_examples']} | {f['test_accuracy']:.3f} | {s['test_accuracy']:.3f} "
            f"| {f['test_macro_f1']:.3f} | {s['test_macro_f1']:.3f} "
            f"| {row['majority_accuracy']:.3f} |"
        )
    print(f"results: {target / 'bert_finetune.json'} (load average {result['load_average']})")


if __name__ == "__main__":
    main()
