"""Scale-out switches: strategies on two logical CPU devices and two loopback workers, mixed
precision on every family's head, XLA, and the errors a user sees for a bad setting.

Device layouts and multi-worker collectives must be set before TensorFlow initialises, so those
runs happen in child processes; this process only reads their MLflow runs back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from kerasops.errors import ConfigError
from kerasops.models import MODELS, PRESETS, get_family
from kerasops.models.training import TrainConfig, compile_model
from kerasops.pipelines.config import load_params, resolve_run_config
from kerasops.pipelines.config.pipeline import RunSpec
from kerasops.pipelines.steps.pipeline import check_runs
from kerasops.pipelines.steps.prepare import ensure_prepared
from kerasops.pipelines.steps.retrain import start_cycle
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.training import distribute
from tests.conftest import train_run, write_params
from tests.services import free_port
from tests.test_detection import DETECTION
from tests.test_keyword_spotter import AUDIO
from tests.test_models import IMAGE, IMAGES, ROWS, SERIES, TABULAR, TEXT, TEXTS, WINDOWS
from tests.test_segmenter import SEGMENTATION
from tests.test_sequence_models import (
    LM_INPUTS,
    PROMPTS,
    SOURCES,
    TARGETS,
    TRANSLATION_INPUTS,
)

pytestmark = pytest.mark.serial  # timed against other processes: run alone (Makefile)

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["epochs=3", "batch_size=32", "patience=3"]

TWO_DEVICES = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasops.pipelines.config import load_params, resolve_run_config
from kerasops.pipelines.steps.train import train_model
params = load_params("params.yaml")
runs = {}
for strategy in ("default", "mirrored"):
    overrides = [f"strategy={strategy}", *sys.argv[1:]]
    run = resolve_run_config(params, "cnn", "digits", "cnn_small", overrides)
    runs[strategy] = train_model(params, run).run_id
print("RUNS " + json.dumps(runs))
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_record(project: Path, run_id: str):
    tracking.configure(load_params(project / "params.yaml"))
    return MlflowClient().get_run(run_id)


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_matches_default_strategy(project):
    done = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES, *TRAIN],
        cwd=project,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.split("RUNS ", 1)[1])
    default, mirrored = (run_record(project, runs[k]) for k in ("default", "mirrored"))
    assert default.data.params["train.replicas"] == "1"
    assert mirrored.data.params["train.replicas"] == "2"
    assert mirrored.data.params["train.global_batch_size"] == "64"  # 32 per replica
    assert mirrored.data.params["train.strategy"] == "mirrored"
    accuracy = [r.data.metrics["test_accuracy"] for r in (default, mirrored)]
    assert min(accuracy) > 0.85, accuracy
    assert abs(accuracy[0] - accuracy[1]) < 0.08, accuracy


EVERY_RECIPE = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasops.pipelines.config import load_params, resolve_run_config
from kerasops.pipelines.steps.train import train_model
params = load_params("params.yaml")
scores = {}
for model, dataset, preset, extra in json.loads(sys.argv[1]):
    overrides = ["strategy=mirrored", "epochs=1", *extra]
    run = resolve_run_config(params, model, dataset, preset, overrides)
    scores[model] = train_model(params, run).metrics
print("SCORES " + json.dumps(scores))
"""
# One run per recipe whose `fit` builds, compiles or targets on its own (a second phase, a custom
# train step, reconstruction targets, a custom loss, teacher forcing). The language model fits
# on the standard path, which test_mirrored_on_two_cpu_devices_matches_default_strategy covers.
RECIPE_RUNS = [
    [
        "transfer",
        "digits",
        "transfer_mobilenet_small",
        [
            "weights=none",
            "image_size=32",
            "fine_tune_epochs=1",
            "fine_tune_layers=20",
            "calibration_images=32",
        ],
    ],
    ["gan", "digits", "gan_small", []],
    ["autoencoder", "digits", "autoencoder_dense_small", []],
    ["detector", "detection_digits", "detector_tiny", []],
    ["translator", "dates", "translator_tiny", []],
]


@pytest.mark.slow
def test_every_recipe_trains_and_evaluates_under_mirrored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datasets = {
        # small on purpose: each recipe's own fit and evaluate under the strategy is the point
        "dates": {"examples": 400},
        "detection_digits": {"source": "digits_detection", "num_images": 150},
    }
    write_params(tmp_path, datasets=datasets)
    done = subprocess.run(
        [sys.executable, "-c", EVERY_RECIPE, json.dumps(RECIPE_RUNS)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout.split("SCORES ", 1)[1])
    assert sorted(scores) == sorted(run[0] for run in RECIPE_RUNS)
    assert scores["transfer"]["epochs_run"] == 2.0  # phase 2 recompiled in scope and ran
    assert "test_map50" in scores["detector"]


WORKER = """
import json
import tensorflow as tf
from kerasops.pipelines.training import distribute
from kerasops.models.training import TrainConfig
strategy = distribute.make_strategy(TrainConfig(strategy="multi_worker"))
task = json.loads(__import__("os").environ["TF_CONFIG"])["task"]["index"]
value = strategy.run(lambda: tf.constant(float(task + 1)))  # worker 0 -> 1, worker 1 -> 2
total = strategy.reduce("SUM", value, axis=None)
print("WORKER " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "sum": float(total),
    "chief": distribute.is_chief(strategy),
    "global_batch": distribute.global_batch_size(TrainConfig(batch_size=32), strategy),
}))
"""


@pytest.mark.slow
def test_multi_worker_strategy_forms_from_tf_config_over_loopback():
    workers = start_workers([sys.executable, "-c", WORKER], REPO)
    outputs = finish(workers, timeout=120)
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-1500:] + outputs[1][-1500:]
    results = [json.loads(out.split("WORKER ", 1)[1]) for out in outputs]
    assert [r["chief"] for r in results] == [True, False]  # worker 0 leads without a chief
    for result in results:
        assert result["replicas"] == 2 and result["global_batch"] == 64
        assert result["sum"] == 3.0  # a real all-reduce across both processes


def start_workers(command: Sequence[str], cwd: Path) -> list[subprocess.Popen]:
    """Start `command` once per worker of a two-worker loopback cluster (worker 0 leads)."""
    ports = [free_port(), free_port()]
    workers = []
    for index in (0, 1):
        tf_config = {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
        workers.append(
            subprocess.Popen(
                command,
                cwd=cwd,
                env=child_env(TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return workers


def finish(workers: list[subprocess.Popen], timeout: float) -> list[str]:
    """Each worker's output once all exited; kill any still running after `timeout`."""
    try:
        return [worker.communicate(timeout=timeout)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def printed_metrics(output: str) -> dict[str, float]:
    """The `name value` metric lines `kerasops train` prints last."""
    lines = output.split("finished", 1)[1].splitlines()[1:]
    return {name: float(value) for name, value in (line.split() for line in lines if line)}


@pytest.mark.slow
def test_kerasops_train_runs_on_two_loopback_workers_and_the_chief_records_it(project):
    ensure_prepared(load_params(project / "params.yaml"), "digits")  # both workers share it
    command = [sys.executable, "-m", "kerasops", "train", "cnn", "--dataset", "digits"]
    command += ["--preset", "cnn_small", "--set", "strategy=multi_worker"]
    command += [arg for setting in TRAIN for arg in ("--set", setting)]
    workers = start_workers(command, project)
    outputs = finish(workers, timeout=400)

    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "run " in outputs[0] and "worker finished its share" in outputs[1]
    chief, worker = (printed_metrics(o) for o in outputs)
    assert chief["test_accuracy"] > 0.85, chief
    for name in ("test_accuracy", "test_macro_f1", "epochs_run"):
        assert chief[name] == worker[name]  # one model, trained in step on both workers
    experiment_id = tracking.configure(load_params(project / "params.yaml"))
    runs = MlflowClient().search_runs([experiment_id])
    assert len(runs) == 1  # the non-chief recorded nothing in the project's store
    params = runs[0].data.params
    assert params["train.strategy"] == "multi_worker" and params["train.replicas"] == "2"
    assert params["train.global_batch_size"] == "64"  # 32 per replica
    assert runs[0].data.metrics["test_accuracy"] == pytest.approx(chief["test_accuracy"], 1e-4)
    assert (project / "artifacts/runs/cnn-digits/model.keras").is_file()
    assert not list((project / "artifacts/runs").glob(".stage-*"))  # worker scratch removed


def test_flows_and_retraining_refuse_multi_worker_naming_the_launch(project):
    params = load_params(project / "params.yaml")
    run = resolve_run_config(params, "cnn", "digits", None, ["strategy=multi_worker"])
    with pytest.raises(ConfigError, match="kerasops train. started on every worker"):
        start_cycle(params, run)
    with pytest.raises(ConfigError, match="flows and retraining train in one process"):
        check_runs(params, [RunSpec(model="cnn", dataset="digits")], ["strategy=multi_worker"])


SPECS = [
    (IMAGE, IMAGES),
    (TEXT, TEXTS),
    (SERIES, WINDOWS),
    (TABULAR, ROWS),
    (LM_INPUTS, PROMPTS),
    (TRANSLATION_INPUTS, {"source": SOURCES, "target": TARGETS}),
    (DETECTION, np.random.default_rng(0).uniform(0, 240, (2, 48, 48, 1)).astype("float32")),
    (SEGMENTATION, np.random.default_rng(0).uniform(0, 240, (2, 48, 48, 1)).astype("float32")),
    (AUDIO, np.random.default_rng(0).normal(0, 0.1, (2, 16000)).astype("float32")),
]


def build_any(name: str, train: TrainConfig) -> tuple[keras.Model, np.ndarray]:
    """Build family `name` (its first preset) on the first standard input spec it accepts."""
    family = get_family(name)
    preset = next(({**v} for v in PRESETS.values() if v["model"] == name), {"model": name})
    preset.pop("model")
    if "weights" in family.config.field_names():
        preset["weights"] = "none"  # offline: a pretrained backbone's head is what is checked
    for spec, example in SPECS:
        try:
            with distribute.training_scope(train, tf.distribute.get_strategy()):
                model = family.build(family.config.from_dict({**preset, "inputs": spec}))
            if model.inputs[0].name == "noise":  # a generator: noise in, images out
                shape = (3, model.input_shape[-1])
                example = np.random.default_rng(0).normal(size=shape).astype("float32")
            if all(t.dtype.startswith("int") for t in model.inputs):  # ids in: a pretrainer
                example = {t.name: np.full((2, *t.shape[1:]), 2, "int32") for t in model.inputs}
            return model, example
        except ConfigError:
            continue  # the family takes another kind of input
    raise AssertionError(f"family {name} accepts none of the standard input specs")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_family_keeps_float32_outputs_under_mixed_bfloat16(name):
    train = TrainConfig(mixed_precision="mixed_bfloat16")
    model, example = build_any(name, train)
    assert keras.config.dtype_policy().name == "float32"  # restored after the scope
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    distribute.check_float32_outputs(model, train)
    outputs = model.predict(example, verbose=0)
    named = outputs if isinstance(outputs, dict) else {"output": outputs}
    floating = [np.asarray(v) for v in named.values() if np.asarray(v).dtype.kind == "f"]
    assert floating, "no floating output to check"
    for values in floating:  # e.g. a detector's boxes and scores; its counts are integers
        assert values.dtype == np.float32 and np.all(np.isfinite(values))


def test_a_bfloat16_head_is_refused_with_the_output_named():
    train = TrainConfig(mixed_precision="mixed_bfloat16")
    with distribute.training_scope(train, tf.distribute.get_strategy()):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    with pytest.raises(ConfigError, match="output .*bfloat16.*dtype='float32'"):
        distribute.check_float32_outputs(model, train)


@pytest.mark.slow
def test_bfloat16_trains_saves_and_is_recorded(project):
    params = load_params(project / "params.yaml")
    overrides = [*TRAIN, "mixed_precision=mixed_bfloat16", "jit_compile=false"]
    result = train_run(params, "cnn", "digits", preset="cnn_small", overrides=overrides)
    assert result.metrics["test_accuracy"] > 0.85
    run = run_record(project, result.run_id)
    assert run.data.params["train.mixed_precision"] == "mixed_bfloat16"
    assert run.data.params["train.jit_compile_effective"] == "False"
    reloaded = keras.saving.load_model(result.run_dir / "model.keras")
    assert reloaded.get_layer("block0_conv0").dtype_policy.name == "mixed_bfloat16"
    assert reloaded.get_layer("probabilities").dtype_policy.name == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("name, effective", [("mlp", True), ("transformer", False)])
def test_jit_compile_runs_xla_where_the_model_allows_it(name, effective):
    train = TrainConfig(jit_compile=True, learning_rate=0.01)
    model, example = build_any(name, train)
    compile_model(model, "classification", train)
    assert model.jit_compile is effective  # text vectorization cannot be XLA-compiled
    labels = np.arange(len(example)) % 3
    before = model.evaluate(example, labels, verbose=0)[0]
    model.fit(example, labels, epochs=5, verbose=0)
    assert model.evaluate(example, labels, verbose=0)[0] < before


@pytest.mark.slow
def test_mixed_float16_without_a_gpu_is_one_clear_error(project):
    assert not tf.config.list_physical_devices("GPU")
    done = subprocess.run(
        [sys.executable, "-m", "kerasops", "train", "cnn", "--dataset", "digits"]
        + ["--set", "mixed_precision=mixed_float16"],
        cwd=project,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: train.mixed_precision=mixed_float16 needs a GPU and none is visible; "
        "use mixed_bfloat16 on CPU, or none"
    )
    assert not (project / "artifacts/runs").exists()


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs TF_CONFIG"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {}}', "non-empty 'cluster'"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker"}}', "'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "worker:3"),
    ],
)
def test_bad_tf_config_is_refused_by_name(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=message):
        distribute.make_strategy(TrainConfig(strategy="multi_worker"))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("strategy", "tpu", "train.strategy: 'tpu' is not one of"),
        ("mixed_precision", "float16", "train.mixed_precision: 'float16' is not one of"),
        ("jit_compile", "yes", "train.jit_compile: expected"),
    ],
)
def test_bad_switch_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({key: value}, prefix="train.")


def test_global_batch_scales_with_replicas():
    train = TrainConfig(batch_size=48)
    assert distribute.global_batch_size(train, tf.distribute.get_strategy()) == 48
    assert distribute.is_chief(tf.distribute.get_strategy())
