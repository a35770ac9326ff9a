"""Micro-benchmark: the CPU cost of one logged request, load-independent enough to compare
before/after changes to serving/prediction_log.py on a noisy machine.

    python benchmarks/serving/log_cost.py [--records 20000] [--repeats 3]

Offers `--records` single-example requests (an 8x8x1 float32 image in, 10 float32
probabilities out, as the serving benchmark's stand-in model) to one PredictionLogger at
sampling 1.0 and reports, per record (median of `--repeats`):

- `offer_us`: wall time of offer() itself, the request path's share;
- `serving_cpu_us`: this process's CPU time (time.process_time) from the first offer until
  every record is written and its file closed: offer() and the sender thread's work, what a
  server's GIL pays;
- `writer_cpu_us`: the writer process's CPU time over the same records (the children's rusage
  once it has exited), building and writing the records.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kerasops.serving.prediction_log import LoggingSpec, PredictionLogger  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def once(records: int, folder: Path) -> tuple[float, float, float]:
    logger = PredictionLogger(folder, queue_size=records + 1)
    spec = LoggingSpec("bench/p", 1.0)
    rng = np.random.default_rng(0)
    images = rng.random((64, 1, 8, 8, 1), dtype=np.float32)
    outputs = rng.random((64, 1, 10), dtype=np.float32)
    logger.submit(spec, "bench", 1, "serving_default", {"image": images[0]}, {"p": outputs[0]})
    logger.close()  # opens TensorFlow's writer once, outside the measurement
    logger = PredictionLogger(folder, queue_size=records + 1)
    cpu, writer, offered = time.process_time(), children_cpu(), 0.0
    for i in range(records):
        started = time.perf_counter()
        logger.offer(
            spec, "bench", 1, "serving_default", {"image": images[i % 64]}, {"p": outputs[i % 64]}
        )
        offered += time.perf_counter() - started
    logger.close(timeout=600.0)
    cpu, writer = time.process_time() - cpu, children_cpu() - writer
    return offered / records * 1e6, cpu / records * 1e6, writer / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf  # noqa: F401 - loaded before timing, as in the server

    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            runs.append(once(args.records, Path(folder)))
            written = sum(1 for _ in Path(folder).rglob("*.tfrecord"))
            assert written, "no log file written"
    offer_us = statistics.median(r[0] for r in runs)
    cpu_us = statistics.median(r[1] for r in runs)
    writer_us = statistics.median(r[2] for r in runs)
    print(f"records {args.records} x {args.repeats}: offer_us {offer_us:.2f}  "
          f"serving_cpu_us {cpu_us:.1f}  writer_cpu_us {writer_us:.1f}  "
          "(per record, medians)")  # fmt: skip


if __name__ == "__main__":
    main()
