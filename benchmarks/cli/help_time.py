"""Start-up time of the command line: `kerasops --help`, a subcommand's help and an argument
error (none of which may load TensorFlow), against `import tensorflow` alone, side by side.

Every command runs as its own process, as a user's shell runs it, in `--rounds` interleaved
rounds so a busy machine slows each alike; the median and the best round are recorded with the
load average. Results go to `artifacts/benchmarks/cli_help.json` unless `--update-results`
rewrites `benchmarks/cli/results.json` (the figures RESULTS.md quotes).

    .venv/bin/python benchmarks/cli/help_time.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERASOPS = [sys.executable, "-m", "kerasops"]
COMMANDS = {
    "kerasops --help": [*KERASOPS, "--help"],
    "kerasops train --help": [*KERASOPS, "train", "--help"],
    "kerasops train (missing --dataset)": [*KERASOPS, "train", "cnn"],
    "kerasops predict --help": [*KERASOPS, "predict", "--help"],
    "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
}
TARGET_S = 1.5  # `kerasops --help` must answer within this


def time_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument("--update-results", action="store_true", help="rewrite results.json")
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once
        time_once(command)
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            seconds[name].append(time_once(command))
    reference = statistics.median(seconds["python -c 'import tensorflow'"])
    rows = {
        name: {
            "median_s": round(statistics.median(times), 3),
            "best_s": round(min(times), 3),
            "ratio_to_import_tensorflow": round(statistics.median(times) / reference, 3),
        }
        for name, times in seconds.items()
    }
    help_s = rows["kerasops --help"]["median_s"]
    result = {
        "rounds": args.rounds,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "commands": rows,
        "target": f"kerasops --help median under {TARGET_S} s",
        "target_met": help_s < TARGET_S,
    }
    target = ROOT / (
        "benchmarks/cli/results.json"
        if args.update_results
        else "artifacts/benchmarks/cli_help.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in rows.items():
        print(
            f"{name:40s} median {row['median_s']:.3f} s  best {row['best_s']:.3f} s  "
            f"x{row['ratio_to_import_tensorflow']:.2f} of import tensorflow"
        )
    print(
        f"load average {result['load_average_before']} -> {result['load_average_after']}; "
        f"wrote {target.relative_to(ROOT)}"
    )
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
