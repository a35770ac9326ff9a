"""Preparing a large user CSV: a git ref's code against the working tree's, on the same files.

Two CSVs are generated a row at a time: `--text-rows` rows of ~1.7 KB of text (`text_csv` with
drop_duplicates; 120,000 rows are ~200 MB) and `--tabular-rows` rows of three numeric features
and a class (`tabular_csv`). Each is prepared once by the code of `--base` (default `main`, taken
with `git archive`) and once by the working tree's, each in a fresh process: seconds, that
process's RSS once TensorFlow is loaded, and its peak RSS. The load average is printed with
each, since the machine may be busy.

    python benchmarks/data/csv_prepare.py [--base main] [--text-rows 120000] \\
        [--tabular-rows 2000000]

Results go to artifacts/benchmarks/csv_prepare.json (untracked).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent

CHILD = """
import json, os, resource, sys, time
from pathlib import Path
import kerasops.data
from kerasops.data import prepare_dataset
from kerasops.data.shards import ShardWriter, serialize_example

root, config = Path(sys.argv[1]), json.loads(sys.argv[2])
warm = ShardWriter(root, "warm", 1 << 20)  # TensorFlow loaded and a writer used, before
warm.write(serialize_example(b"x", b"y"))
warm.close()
before = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
start = time.perf_counter()
manifest = prepare_dataset("big", config, root, root / "prepared")
seconds = time.perf_counter() - start
print(json.dumps({
    "code": str(Path(kerasops.data.__file__).parent),
    "examples": sum(manifest.splits.values()),
    "seconds": round(seconds, 1),
    "rss_before_mb": round(before, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "loadavg": [round(v, 2) for v in os.getloadavg()],
}))
"""


def write_text_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    paragraphs = [" ".join(rng.choice(words, 300)) for _ in range(200)]  # ~1.7 KB each
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            writer.writerow([f"{i} {paragraphs[i % 200]}", "abc"[i % 3]])


def write_tabular_csv(path: Path, rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["f1", "f2", "f3", "label"])
        for i in range(rows):
            writer.writerow([i % 997, (i * 7) % 1009 / 10, i / 3, "abc"[i % 3]])


def code_tree(base: str | None, folder: Path) -> Path:
    """An importable `kerasops` package (with kerasops.data) of `base`, or of the working tree."""
    package = folder / "kerasops"
    if base is None:
        shutil.copytree(ROOT / "kerasops", package)
        shutil.copytree(
            ROOT / "data",
            package / "data",
            ignore=shutil.ignore_patterns("raw", "prepared", "__pycache__"),
        )
        return folder
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", base, "kerasops", "data"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "data").rename(package / "data")
    return folder


def prepare_with(code: Path, work: Path, config: dict) -> dict:
    shutil.rmtree(work / "prepared", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(work), json.dumps(config)],
        env=env,
        cwd=work,  # not the repository root, whose kerasops/ would come first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="the git ref whose code runs first")
    parser.add_argument("--text-rows", type=int, default=120_000)
    parser.add_argument("--tabular-rows", type=int, default=2_000_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="csv-prepare-") as tmp:
        tmp = Path(tmp)
        trees = {
            args.base: code_tree(args.base, Path(tempfile.mkdtemp(dir=tmp))),
            "working tree": code_tree(None, Path(tempfile.mkdtemp(dir=tmp))),
        }
        cases = [
            ("text_csv", write_text_csv, args.text_rows, {"drop_duplicates": True}),
            ("tabular_csv", write_tabular_csv, args.tabular_rows, {}),
        ]
        for source, write, rows, extra in cases:
            write(tmp / "big.csv", rows)
            size_mb = (tmp / "big.csv").stat().st_size / 2**20
            config = {"source": source, "path": "big.csv", **extra}
            for label, code in trees.items():
                result = {"source": source, "rows": rows, "csv_mb": round(size_mb, 1)}
                result |= {"code_of": label, **prepare_with(code, tmp, config)}
                print(json.dumps(result), flush=True)
                results.append(result)
    out = ROOT / "artifacts" / "benchmarks" / "csv_prepare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
