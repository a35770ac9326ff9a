"""What every recipe fits with: the training config, optimizers, task losses, `fit`, and the
tracking-neutral `RunLog` a recipe reports params, metrics and images through.

`models/` imports neither MLflow nor Prefect: the train step hands a recipe a `RunLog` (MLflow's
in `kerasops.pipelines.tracking`, `NullRunLog` anywhere else).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import keras
import numpy as np

from kerasops.config import StrictConfig, require
from kerasops.data import PreparedData, Split, make_tf_dataset

History = dict[str, list[float]]  # metric name -> one value per epoch


@dataclasses.dataclass(frozen=True)
class TrainConfig(StrictConfig):
    """How a model is fitted.

    Args:
        epochs: maximum epochs; early stopping may end sooner.
        batch_size: examples per step.
        learning_rate: initial learning rate.
        optimizer: adam, adamw or sgd (with momentum 0.9).
        patience: epochs without validation improvement before stopping.
        seed: seeds Python, NumPy and TensorFlow.
        max_tokens: text vocabulary size, taken from the training split.
        sequence_length: tokens kept per text example.
        strategy: `default` (one device), `mirrored` (every local GPU, else every logical
            CPU device) or `multi_worker` (the cluster in `TF_CONFIG`); `batch_size` is per
            replica, the global batch is `batch_size * replicas`.
        mixed_precision: `none`, `mixed_float16` (GPU only) or `mixed_bfloat16`; outputs
            stay float32.
        jit_compile: XLA-compile the train step (`true`/`false`); `auto` is Keras's choice
            (XLA on a GPU without a distribution strategy, off on CPU).
        shuffle_buffer: examples in the training input's shuffle buffer (bounded memory; a
            smaller split is shuffled whole).
        input_cache: `auto` (decoded split cached in memory when it is at most 256 MiB),
            `memory`, `none`, or a file path for an on-disk cache of the decoded examples.
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    patience: int = 5
    seed: int = 42
    max_tokens: int = 20000
    sequence_length: int = 256
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    jit_compile: bool | Literal["auto"] = "auto"
    shuffle_buffer: int = 10_000
    input_cache: str = "auto"

    def validate(self) -> None:
        require(self.epochs >= 0, "train.epochs must be >= 0")
        require(self.batch_size >= 1, "train.batch_size must be >= 1")
        require(self.learning_rate > 0, "train.learning_rate must be positive")
        require(self.patience >= 1, "train.patience must be >= 1")
        require(self.max_tokens >= 10, "train.max_tokens must be >= 10")
        require(self.sequence_length >= 1, "train.sequence_length must be >= 1")
        require(self.shuffle_buffer >= 1, "train.shuffle_buffer must be >= 1")
        require(bool(self.input_cache), "train.input_cache must be auto, memory, none or a path")


class RunLog(Protocol):
    """Where a recipe reports what it did (an MLflow run, or nowhere)."""

    def params(self, values: Mapping[str, Any]) -> None: ...

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None: ...

    def image(self, image: np.ndarray, key: str, step: int) -> None: ...


class NullRunLog:
    """A RunLog that records nothing (evaluation, tests, non-chief workers' own steps)."""

    def params(self, values: Mapping[str, Any]) -> None:
        pass

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        pass

    def image(self, image: np.ndarray, key: str, step: int) -> None:
        pass


class EpochLogger(keras.callbacks.Callback):
    """Report every epoch's training and validation metrics, with an optional name prefix, at
    step = the epoch's number from 1 (as Keras prints `Epoch 1/3`).

    `step_offset` numbers the epochs of a later training phase after the earlier ones.
    """

    def __init__(self, log: RunLog, prefix: str = "", step_offset: int = 0):
        super().__init__()
        self.log = log
        self.prefix = prefix
        self.step_offset = step_offset

    def on_epoch_end(self, epoch, logs=None):
        metrics = {f"{self.prefix}{k}": float(v) for k, v in (logs or {}).items()}
        metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}
        self.log.metrics(metrics, step=self.step_offset + epoch + 1)  # epochs count from 1


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """A fresh optimizer as `train` names it."""
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(train.learning_rate),
        "adamw": lambda: keras.optimizers.AdamW(train.learning_rate),
        "sgd": lambda: keras.optimizers.SGD(train.learning_rate, momentum=0.9),
    }
    return optimizers[train.optimizer]()


# The loss and metrics of each task the standard recipe compiles for.
TASK_LOSSES: dict[str, tuple[str, list[str]]] = {
    "classification": ("sparse_categorical_crossentropy", ["accuracy"]),
    "regression": ("mse", ["mae"]),
}


def compile_model(model: keras.Model, task: str, train: TrainConfig) -> keras.Model:
    """Compile with the task's loss and metrics (TASK_LOSSES)."""
    loss, metrics = TASK_LOSSES[task]
    model.compile(
        optimizer=make_optimizer(train),
        loss=loss,
        metrics=list(metrics),
        jit_compile=train.jit_compile,
    )
    return model


def standard_callbacks(train: TrainConfig, checkpoint: Path) -> list[keras.callbacks.Callback]:
    """Early stopping (restoring the best weights) and a best-only checkpoint."""
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=train.patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
    ]


def fit(
    model: keras.Model,
    prepared: PreparedData,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    epochs: int | None = None,
) -> History:
    """Fit on train with validation on val; return the history."""
    splits = prepared.splits
    return fit_on(model, splits["train"], splits["val"], train, callbacks, epochs)


def fit_on(
    model: keras.Model,
    train_split: Split,
    val_split: Split | None,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    epochs: int | None = None,
) -> History:
    """Fit on explicit (x, y) splits; return the per-epoch history."""
    epochs = train.epochs if epochs is None else epochs
    if epochs == 0:
        return {}
    data = make_tf_dataset(
        train_split,
        train.batch_size,
        True,
        train.seed,
        cache=input_cache(train, "train"),
        shuffle_buffer=train.shuffle_buffer,
    )
    val = (
        make_tf_dataset(val_split, train.batch_size, False, cache=input_cache(train, "val"))
        if val_split
        else None
    )
    history = model.fit(
        data,
        validation_data=val,
        epochs=epochs,
        callbacks=list(callbacks),
        shuffle=False,  # the tf.data pipeline shuffles, with the run's seed
        verbose=fit_verbosity(),
    )
    return as_history(history)


def input_cache(train: TrainConfig, split: str) -> str:
    """`train.input_cache` for one split: an on-disk cache path gets the split's name appended."""
    if train.input_cache in ("auto", "memory", "none"):
        return train.input_cache
    return f"{train.input_cache}.{split}"


def fit_verbosity() -> int:
    """Keras `fit` verbosity: a progress bar per epoch on a terminal, one line per epoch in a
    log file or CI."""
    return 1 if sys.stdout.isatty() else 2


def as_history(history: keras.callbacks.History) -> History:
    """Keras' History as plain floats per metric."""
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def trainable_count(model: keras.Model) -> int:
    """Number of trainable parameters."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
