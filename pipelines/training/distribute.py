"""Scale-out switches for the train step: `tf.distribute` strategies, mixed precision and XLA.

`train.strategy` picks the strategy (`make_strategy`); the model is built and compiled inside
its scope (`training_scope`) under the `train.mixed_precision` dtype policy, and Keras
distributes the tf.data pipelines over the replicas. `train.batch_size` is per replica: the
global batch is `global_batch_size`. `multi_worker` reads the cluster from `TF_CONFIG`, as
TensorFlow documents it: every worker runs the same `kerasops train`, and the one `is_chief`
names records the run. Keras 3.15's `fit` needs two fixes under these strategies
(`kerasops.pipelines.training.keras_fixes`), installed when one is made.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from kerasops.config import require
from kerasops.errors import ConfigError
from kerasops.models.training import TrainConfig
from kerasops.pipelines.training import keras_fixes

_STRATEGIES: dict[tuple[str, str], tf.distribute.Strategy] = {}


def read_tf_config() -> dict[str, Any]:
    """The parsed `TF_CONFIG` (cluster and task); raise ConfigError if absent or malformed."""
    text = os.environ.get("TF_CONFIG", "")
    require(bool(text), "train.strategy=multi_worker needs TF_CONFIG (cluster and task) set")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {exc}") from None
    require(isinstance(config, dict), "TF_CONFIG must be a JSON object")
    cluster, task = config.get("cluster"), config.get("task")
    require(isinstance(cluster, dict) and bool(cluster), "TF_CONFIG needs a non-empty 'cluster'")
    require(
        isinstance(task, dict) and "type" in task and isinstance(task.get("index"), int),
        "TF_CONFIG needs 'task' with 'type' and an integer 'index'",
    )
    workers = cluster.get(task["type"])
    require(
        isinstance(workers, list) and 0 <= task["index"] < len(workers),
        f"TF_CONFIG task {task['type']}:{task['index']} is not in its cluster",
    )
    return config


def make_strategy(train: TrainConfig) -> tf.distribute.Strategy:
    """The strategy `train.strategy` names; one per process and setting.

    Call it before any other TensorFlow op: `multi_worker` configures collectives at startup.
    """
    check_precision(train.mixed_precision)
    key = (train.strategy, os.environ.get("TF_CONFIG", ""))
    if key not in _STRATEGIES:
        if train.strategy == "default":
            _STRATEGIES[key] = tf.distribute.get_strategy()
        elif train.strategy == "mirrored":
            keras_fixes.install()
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            _STRATEGIES[key] = tf.distribute.MirroredStrategy([d.name for d in devices])
        else:
            read_tf_config()
            keras_fixes.install()
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES[key]


def require_one_process(train: TrainConfig) -> None:
    """Refuse `multi_worker` where one process trains (flows, retraining): it needs every worker."""
    require(
        train.strategy != "multi_worker",
        "train.strategy=multi_worker needs `kerasops train` started on every worker with its "
        "own TF_CONFIG; flows and retraining train in one process: use default or mirrored",
    )


def global_batch_size(train: TrainConfig, strategy: tf.distribute.Strategy) -> int:
    """Examples per step over all replicas: the per-replica `train.batch_size` times replicas."""
    return train.batch_size * strategy.num_replicas_in_sync


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process records and publishes the run (always, outside multi_worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_precision(policy: str) -> None:
    """Refuse mixed_float16 where no GPU runs it (CPUs have no fast float16 math)."""
    if policy == "mixed_float16":
        require(
            bool(tf.config.list_physical_devices("GPU")),
            "train.mixed_precision=mixed_float16 needs a GPU and none is visible; "
            "use mixed_bfloat16 on CPU, or none",
        )


@contextlib.contextmanager
def training_scope(train: TrainConfig, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Build and compile in here: the strategy's scope under the run's dtype policy.

    The global dtype policy is restored on exit, so later models are unaffected.
    """
    check_precision(train.mixed_precision)
    previous = keras.config.dtype_policy()
    if train.mixed_precision != "none":
        keras.config.set_dtype_policy(train.mixed_precision)
    try:
        with strategy.scope():
            yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_float32_outputs(model: keras.Model, train: TrainConfig) -> None:
    """Under mixed precision, raise ConfigError naming any reduced-precision output.

    Integer outputs (a detector's counts and classes) are exact and left as they are.
    """
    if train.mixed_precision == "none":
        return
    for tensor in model.outputs:
        require(
            tensor.dtype not in ("float16", "bfloat16"),
            f"model output {tensor.name!r} is {tensor.dtype} under mixed precision; "
            "its output layer needs dtype='float32'",
        )


def run_params(model: keras.Model, train: TrainConfig, strategy: tf.distribute.Strategy) -> dict:
    """What the run actually used, for MLflow: replicas, global batch, effective XLA."""
    return {
        "train.replicas": strategy.num_replicas_in_sync,
        "train.global_batch_size": global_batch_size(train, strategy),
        "train.jit_compile_effective": bool(model.jit_compile),
    }


def limit_threads(threads: int) -> None:
    """TensorFlow's thread pools sized so parallel worker processes share the cores; only
    possible before the process's first TensorFlow op."""
    if threads <= 0:
        return
    with contextlib.suppress(RuntimeError):  # already running: this process set them before
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
