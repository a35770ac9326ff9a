"""Training throughput of each distribution strategy at one global batch, side by side in one run.

The CNN (`cnn_small`) on digits is built and compiled as `train_model` does it (inside
`distribute.training_scope`, `compile_model`) and fitted on the same tf.data pipeline under:

- `default`: one process, one device;
- `mirrored`: one process, MirroredStrategy over two logical CPU devices;
- `multi_worker`: two processes on loopback ports, MultiWorkerMirroredStrategy, one replica each.

Every variant runs the same global batch (`--batch`), so examples per second compare directly.
Strategies must be chosen before TensorFlow starts, so each variant runs in fresh processes; the
variants take turns for `--passes` passes (a busy machine slows each alike), and in each pass a
process warms up (tracing) and then times `--rounds` rounds of `--steps` steps. The best round
(the least disturbed) and the median are recorded; a multi-worker round counts when both workers
finished it, as the chief sees it.

    PYTHONPATH=. python benchmarks/training/strategies.py --out benchmarks/training/strategies.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys, time
import tensorflow as tf
variant, steps, rounds, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if variant == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasops.data import make_tf_dataset
from kerasops.models import get_family, preset_values
from kerasops.pipelines.training import distribute
from kerasops.models.training import TrainConfig
from kerasops.pipelines.config import load_params
from kerasops.models.recipe import data_input_spec as input_spec
from kerasops.models.training import compile_model
from kerasops.pipelines.steps.prepare import ensure_prepared

strategy = distribute.make_strategy(TrainConfig(strategy=variant))
train = TrainConfig(strategy=variant, batch_size=batch // strategy.num_replicas_in_sync)
prepared = ensure_prepared(load_params("params.yaml"), "digits")
spec = input_spec(prepared, train)
family = get_family("cnn")
values = {**preset_values("cnn", "cnn_small"), "inputs": spec.to_dict()}
with distribute.training_scope(train, strategy):
    model = compile_model(family.build(family.config.from_dict(values)), spec.task, train)
global_batch = distribute.global_batch_size(train, strategy)
data = make_tf_dataset(prepared.splits["train"], global_batch, shuffle=True).repeat()
model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # trace
seconds = []
for _ in range(rounds):
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds.append(time.perf_counter() - started)
report = {"replicas": strategy.num_replicas_in_sync, "global_batch": global_batch}
print("TIMES " + json.dumps({**report, "seconds": seconds, "chief": distribute.is_chief(strategy)}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_variant(variant: str, project: Path, steps: int, rounds: int, batch: int) -> dict:
    """One pass of `variant`: its process(es) started, waited for, and the chief's timings."""
    command = [sys.executable, "-c", CHILD, variant, str(steps), str(rounds), str(batch)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    envs = [env]
    if variant == "multi_worker":
        workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        envs = [
            {**env, "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": task})}
            for task in ({"type": "worker", "index": 0}, {"type": "worker", "index": 1})
        ]
    processes = [
        subprocess.Popen(command, cwd=project, env=e, stdout=subprocess.PIPE, text=True)
        for e in envs
    ]
    outputs = [p.communicate(timeout=1200)[0] for p in processes]
    if any(p.returncode for p in processes):
        raise SystemExit(f"{variant} failed: exit codes {[p.returncode for p in processes]}")
    reports = [json.loads(out.split("TIMES ", 1)[1]) for out in outputs]
    return next(r for r in reports if r["chief"])


def prepare_digits(project: Path) -> None:
    sys.path.insert(0, str(REPO))
    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.steps.prepare import ensure_prepared

    ensure_prepared(load_params(project / "params.yaml"), "digits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="global batch, every variant")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = ("default", "mirrored", "multi_worker")
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    replicas: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as root:
        project = Path(root)
        (project / "params.yaml").write_text("paths:\n  artifacts: artifacts\n")
        prepare_digits(project)  # once, before two workers could race to do it
        for _ in range(args.passes):
            for variant in variants:
                report = run_variant(variant, project, args.steps, args.rounds, args.batch)
                seconds[variant] += report["seconds"]
                replicas[variant] = report["replicas"]
    examples = args.steps * args.batch
    best = {v: examples / min(s) for v, s in seconds.items()}
    median = {v: examples / statistics.median(s) for v, s in seconds.items()}
    import tensorflow as tf  # already loaded by prepare_digits

    report = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "model": "cnn_small on digits",
        "global_batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds * args.passes,
        "replicas": replicas,
        "examples_per_second_best": {k: round(v, 1) for k, v in best.items()},
        "ratio_to_default_best": {k: round(v / best["default"], 3) for k, v in best.items()},
        "examples_per_second_median": {k: round(v, 1) for k, v in median.items()},
        "ratio_to_default_median": {k: round(v / median["default"], 3) for k, v in median.items()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
