"""Batch-scoring benchmark: `kerasops predict-batch` over generated photo folders of two sizes
(data/photos.py), with the project's `cnn_small` CNN served from a model repository, each run in
its own process; rows/s from the command's own report (model loaded, input read, predictions
and prediction log written) and the process's peak RSS from `getrusage`.

    python benchmarks/batch/run.py [--counts 1000 4000] [--workdir DIR]

Prints one markdown table; the figures in README.md's batch-inference section come from it.
Peak RSS that stays flat from the smaller folder to the larger is the bounded-memory claim.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODEL = "photos-cnn"
IMAGE = 64  # the model's input: 64 x 64 RGB


def setup(work: Path, counts: list[int], photo_size: int) -> Path:
    """A project folder: params.yaml, photo folders of each count, the CNN exported."""
    import yaml

    from kerasops.data.photos import CLASSES, generate_photo_folder
    from kerasops.models.registry import build_model
    from kerasops.pipelines.config import load_params
    from kerasops.serving.export import export_saved_model

    paths = {"artifacts": "artifacts", "raw_data": "data/raw", "prepared_data": "data/prepared"}
    (work / "params.yaml").write_text(yaml.safe_dump({"paths": paths}))
    for count in counts:
        folder = work / f"photos-{count}"
        if not folder.is_dir():
            generate_photo_folder(folder, count, size=photo_size, seed=count)
    inputs = {"kind": "image", "task": "classification", "shape": [IMAGE, IMAGE, 3]}
    inputs |= {"num_outputs": len(CLASSES), "pixel_max": 255.0}
    model = build_model("cnn", {"inputs": inputs, "filters": [32, 64], "dense_units": 64})
    config = load_params(work / "params.yaml").serving.at_root(work)
    export_saved_model(model, MODEL, config=config, class_names=list(CLASSES))
    return work


def measure(work: Path, args: list[str]) -> dict[str, float]:
    """One `kerasops predict-batch` process: its reported rows/s, wall time and peak RSS."""
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.stdout + r.stderr); "
        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.exit(r.returncode)"
    )
    kerasops = str(Path(sys.executable).with_name("kerasops"))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", probe, kerasops, "predict-batch", MODEL, *args],
        cwd=work,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    scored = re.search(r"scored (\d+) rows .* in ([\d.]+) s \((\d+) rows/s\)", done.stdout)
    rss = re.search(r"maxrss_kb (\d+)", done.stdout)
    return {
        "rows": int(scored.group(1)),
        "seconds": float(scored.group(2)),
        "rows_per_s": float(scored.group(3)),
        "wall_s": wall,
        "peak_rss_mb": int(rss.group(1)) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--photo-size", type=int, default=128, help="generated JPEG side (128)")
    parser.add_argument("--workdir", help="keep the project here (default: a temporary folder)")
    options = parser.parse_args()
    work = Path(options.workdir or tempfile.mkdtemp(prefix="kerasops-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    setup(work, options.counts, options.photo_size)
    cases = [("csv", "1.0"), ("csv", "0"), ("parquet", "1.0")]
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} cores")
    print("| photos | output | log sampling | rows/s (scoring) | wall s (process) | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|")
    for count in options.counts:
        for fmt, sampling in cases:
            output = work / f"out-{count}.{fmt}"
            args = ["--input", f"photos-{count}", "--output", str(output)]
            result = measure(work, [*args, "--log-sampling", sampling])
            print(
                f"| {result['rows']} | {fmt} | {sampling} | {result['rows_per_s']:.0f} | "
                f"{result['wall_s']:.1f} | {result['peak_rss_mb']:.0f} |",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
