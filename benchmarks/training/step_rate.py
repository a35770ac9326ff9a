"""Training step rate of each speed switch against the default, side by side in one run.

For the CNN on digits and the Transformer on bbc_news, every variant (default, mixed_bfloat16,
jit_compile, both) is built and compiled exactly as `train_model` does it (the family's builder
inside `distribute.training_scope`, `compile_model`) and fitted on the same tf.data pipeline.
Each variant is warmed up once (tracing, XLA compilation), then timed for `--steps` steps in
`--rounds` interleaved rounds, so a busy machine slows every variant alike. Both the best round
(the least disturbed, as `timeit` reports) and the median are recorded.

    PYTHONPATH=. python benchmarks/training/step_rate.py --out benchmarks/training/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from kerasops.data import make_tf_dataset
from kerasops.models import get_family, preset_values
from kerasops.models.recipe import data_input_spec as input_spec
from kerasops.models.training import TrainConfig, compile_model
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps.prepare import ensure_prepared
from kerasops.pipelines.training import distribute

CASES = [("cnn", "cnn_small", "digits", 64), ("transformer", "transformer_tiny", "bbc_news", 32)]
VARIANTS = {
    "default": {},
    "mixed_bfloat16": {"mixed_precision": "mixed_bfloat16"},
    "jit_compile": {"jit_compile": True},
    "mixed_bfloat16+jit": {"mixed_precision": "mixed_bfloat16", "jit_compile": True},
}


def build(model: str, preset: str, spec, train: TrainConfig) -> keras.Model:
    """The family's model, built and compiled under the variant's switches."""
    family = get_family(model)
    values = {**preset_values(model, preset), "inputs": spec.to_dict()}
    with distribute.training_scope(train, tf.distribute.get_strategy()):
        built = family.build(family.config.from_dict(values))
        return compile_model(built, spec.task, train)


def time_steps(model: keras.Model, data: tf.data.Dataset, steps: int) -> float:
    """Seconds for `steps` training steps (the train function is already traced)."""
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - started


def bench_case(case: tuple, params, steps: int, rounds: int) -> dict:
    model_name, preset, dataset, batch = case
    prepared = ensure_prepared(params, dataset)
    base = TrainConfig(batch_size=batch, sequence_length=200)
    spec = input_spec(prepared, base)
    data = make_tf_dataset(prepared.splits["train"], batch, shuffle=True).repeat()
    models = {}
    for name, switches in VARIANTS.items():
        train = base.replace(**switches)
        models[name] = build(model_name, preset, spec, train)
        models[name].fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # trace + compile
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, model in models.items():
            seconds[name].append(time_steps(model, data, steps))
    median = {name: steps / statistics.median(times) for name, times in seconds.items()}
    best = {name: steps / min(times) for name, times in seconds.items()}  # least disturbed round
    return {
        "model": model_name,
        "preset": preset,
        "dataset": dataset,
        "batch_size": batch,
        "steps": steps,
        "rounds": rounds,
        "steps_per_second_best": {k: round(v, 2) for k, v in best.items()},
        "ratio_to_default_best": {k: round(v / best["default"], 3) for k, v in best.items()},
        "steps_per_second_median": {k: round(v, 2) for k, v in median.items()},
        "ratio_to_default_median": {k: round(v / median["default"], 3) for k, v in median.items()},
        "xla_effective": {k: bool(m.jit_compile) for k, m in models.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        Path(root, "params.yaml").write_text("paths:\n  artifacts: artifacts\n")
        params = load_params(Path(root, "params.yaml"))
        results = [bench_case(case, params, args.steps, args.rounds) for case in CASES]
    report = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "machine": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
