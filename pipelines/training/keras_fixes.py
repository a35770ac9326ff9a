"""Two fixes that let Keras 3 `fit`, `evaluate` and `predict` run under tf.distribute strategies.

Keras 3.15's TensorFlow trainer fails in two places (keras-team/keras#20585, open upstream):

- `TensorFlowTrainer._maybe_symbolic_build` MEAN-reduces the first distributed `(x, y)` batch
  over the replicas before building the model on it symbolically. Under MirroredStrategy that
  fails when the replicas' shares differ in size (a small last or only batch: "Inputs to
  operation AddN ... must have the same size"); under MultiWorkerMirroredStrategy the collective
  reduce takes no structure at all ("Attempt to convert a value (PerReplica:...)").
- In multi-worker mode `reduce_per_replica` MEAN-reduces every step output over the replicas
  *and* `axis=0`, which a scalar loss or metric does not have.

`install` replaces both. The symbolic build only needs shapes and dtypes, so it now takes this
process's first replica's share; step outputs are averaged over the replicas alone
(`axis=None`), as Keras does under the other strategies. Anything else is Keras' own code,
`predict`'s ordered concatenation included. `make_strategy` installs them for `mirrored` and
`multi_worker`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer

from kerasops.config import require

_installed = False


def install() -> None:
    """Patch Keras' TensorFlow trainer as above (idempotent).

    Raise ConfigError when this Keras no longer has the functions the fixes replace.
    """
    global _installed
    if _installed:
        return

    require(
        all(
            hasattr(trainer, name)
            for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker")
        )
        and hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build"),
        f"train.strategy: Keras {keras.__version__}'s trainer differs from the 3.15 one "
        "kerasops fixes for distribution strategies; pin keras==3.15.1",
    )
    in_multi_worker = trainer._collective_all_reduce_multi_worker
    keras_reduce = trainer.reduce_per_replica
    keras_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
        if in_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        strategy = self._distribute_strategy
        if strategy is None or iterator is None:
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(local_value(strategy), next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _installed = True


def local_value(strategy: tf.distribute.Strategy) -> Any:
    """A function taking a distributed value to this process's first replica's share."""

    def first(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return first
