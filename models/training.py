"""What every recipe fits with: the training config, optimizers, task losses, `fit`, and the
tracking-neutral `RunLog` a recipe reports params, metrics and images through.

`models/` imports neither MLflow nor Prefect: the train step hands a recipe a `RunLog` (MLflow's
in `kerasops.pipelines.tracking`, `NullRunLog` anywhere else).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import keras
import numpy as np

from kerasops.config import StrictConfig, require
from kerasops.data import PreparedData, Split, make_tf_dataset
from kerasops.errors import KerasopsError

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
        clipnorm: cap each gradient tensor's L2 norm (at most one of the three clips).
        clipvalue: cap each gradient element to `[-clipvalue, clipvalue]`.
        global_clipnorm: cap the L2 norm of all gradients together.
        lr_schedule: `constant`; `cosine` (from `learning_rate` down to `min_learning_rate`
            over the run's steps); `warmup_cosine` (a linear rise from 0 over `warmup_fraction`
            of the steps, then cosine); `reduce_on_plateau` (times `plateau_factor` after
            `plateau_patience` epochs without a lower validation loss).
        warmup_fraction: share of the run's steps spent warming up (`warmup_cosine`).
        min_learning_rate: the floor of every schedule.
        plateau_factor, plateau_patience: `reduce_on_plateau`'s step and wait.
        gradient_accumulation_steps: batches whose gradients are averaged into one update
            (1: every batch updates); the effective batch is `batch_size` times this.
        shuffle_buffer: examples in the training input's shuffle buffer (bounded memory; a
            smaller split is shuffled whole).
        shuffle_buffer_mb: the streamed shuffle buffer's bound in MiB too: it holds at most
            this many MiB of serialized examples (at the shards' mean example size).
        input_cache: `auto` (the decoded split cached in memory when it takes at most
            `input_cache_mb`), `memory`, `none`, or a file path for an on-disk cache of the
            decoded examples.
        input_cache_mb: `auto`'s bound, in MiB of decoded examples (images as uint8).
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
    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None
    lr_schedule: Literal["constant", "cosine", "warmup_cosine", "reduce_on_plateau"] = "constant"
    warmup_fraction: float = 0.1
    min_learning_rate: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    gradient_accumulation_steps: int = 1
    shuffle_buffer: int = 10_000
    shuffle_buffer_mb: float = 64.0
    input_cache: str = "auto"
    input_cache_mb: float = 256.0

    def validate(self) -> None:
        require(self.epochs >= 0, "train.epochs must be >= 0")
        require(self.batch_size >= 1, "train.batch_size must be >= 1")
        require(self.learning_rate > 0, "train.learning_rate must be positive")
        require(self.patience >= 1, "train.patience must be >= 1")
        require(self.max_tokens >= 10, "train.max_tokens must be >= 10")
        require(self.sequence_length >= 1, "train.sequence_length must be >= 1")
        clips = {"clipnorm": self.clipnorm, "clipvalue": self.clipvalue}
        clips["global_clipnorm"] = self.global_clipnorm
        for name, value in clips.items():
            require(value is None or value > 0, f"train.{name} must be positive (or null: off)")
        chosen = [f"train.{name}" for name, value in clips.items() if value is not None]
        require(len(chosen) <= 1, f"set at most one gradient clip, got {' and '.join(chosen)}")
        require(0 <= self.warmup_fraction < 1, "train.warmup_fraction must be in [0, 1)")
        require(
            0 <= self.min_learning_rate < self.learning_rate,
            "train.min_learning_rate must be in [0, train.learning_rate)",
        )
        require(0 < self.plateau_factor < 1, "train.plateau_factor must be in (0, 1)")
        require(self.plateau_patience >= 1, "train.plateau_patience must be >= 1")
        require(
            self.gradient_accumulation_steps >= 1,
            "train.gradient_accumulation_steps must be >= 1 (1: no accumulation)",
        )
        require(  # Keras' accumulation is a cond around apply_gradients: no cross-replica sync
            self.gradient_accumulation_steps == 1 or self.strategy == "default",
            "train.gradient_accumulation_steps needs strategy: default (one device); under "
            f"{self.strategy}, batch_size is per replica: raise it instead",
        )
        require(self.shuffle_buffer >= 1, "train.shuffle_buffer must be >= 1")
        require(self.shuffle_buffer_mb > 0, "train.shuffle_buffer_mb must be positive")
        require(bool(self.input_cache), "train.input_cache must be auto, memory, none or a path")
        require(self.input_cache_mb >= 0, "train.input_cache_mb must be >= 0 (0: never cache)")


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


def gradient_options(train: TrainConfig) -> dict[str, Any]:
    """The clipping and accumulation keyword arguments of a Keras optimizer, as `train` sets
    them (for recipes that build their own optimizers)."""
    options: dict[str, Any] = {
        name: getattr(train, name)
        for name in ("clipnorm", "clipvalue", "global_clipnorm")
        if getattr(train, name) is not None
    }
    if train.gradient_accumulation_steps > 1:
        options["gradient_accumulation_steps"] = train.gradient_accumulation_steps
    return options


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """A fresh optimizer as `train` names it, with its gradient clip and accumulation."""
    options = gradient_options(train)
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(train.learning_rate, **options),
        "adamw": lambda: keras.optimizers.AdamW(train.learning_rate, **options),
        "sgd": lambda: keras.optimizers.SGD(train.learning_rate, momentum=0.9, **options),
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
    """A stop on a non-finite loss, the learning-rate schedule, early stopping (restoring the
    best weights) and a best-only checkpoint."""
    return [
        StopOnNonFiniteLoss(),
        *learning_rate_callbacks(train),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=train.patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
    ]


class TrainingDiverged(KerasopsError):
    """The loss became NaN or infinite: the run stops rather than train on garbage."""


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN that remembers where the loss went non-finite (any logged value
    named `*loss`), so the run can fail with one line saying so (`raise_if_diverged`)."""

    def __init__(self):
        super().__init__()
        self.diverged: str = ""  # "epoch 3, batch 12: loss = nan"
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {k: float(v) for k, v in logs.items() if k.endswith("loss") and not np.isfinite(v)}
        if bad and not self.diverged:
            name, value = next(iter(bad.items()))
            self.diverged = f"epoch {self.epoch}, batch {batch + 1}: {name} = {value}"
            self.model.stop_training = True


def raise_if_diverged(callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Raise TrainingDiverged when a StopOnNonFiniteLoss among `callbacks` stopped the fit."""
    for callback in callbacks:
        if isinstance(callback, StopOnNonFiniteLoss) and callback.diverged:
            raise TrainingDiverged(
                f"training diverged at {callback.diverged}; lower train.learning_rate or "
                "clip the gradients (train.clipnorm, e.g. 1.0)"
            )


def learning_rate_callbacks(train: TrainConfig) -> list[keras.callbacks.Callback]:
    """What moves the learning rate during `fit` as `train.lr_schedule` says; every schedule
    reports the rate in the epoch's logs as `learning_rate`."""
    if train.lr_schedule == "reduce_on_plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=train.plateau_factor,
                patience=train.plateau_patience,
                min_lr=train.min_learning_rate,
            ),
            LearningRateLogger(),
        ]
    return [ScheduledLearningRate(train)]


def optimizers_of(model: keras.Model) -> list[keras.optimizers.Optimizer]:
    """The optimizers a compiled model steps: `model.optimizer`, or, for a trainer that keeps
    its own (an adversarial pair as `d_optimizer` and `g_optimizer`), those."""
    own = {
        id(value): value
        for name, value in vars(model).items()
        if name != "optimizer" and isinstance(value, keras.optimizers.Optimizer)
    }
    if own:
        return list(own.values())
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if isinstance(optimizer, keras.optimizers.Optimizer) else []


def current_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's learning rate now (a plain, mirrored or distributed variable)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Put the first optimizer's learning rate into each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        optimizers = optimizers_of(self.model)
        if logs is not None and optimizers:
            logs["learning_rate"] = current_rate(optimizers[0])


class ScheduledLearningRate(LearningRateLogger):
    """Set every optimizer's learning rate before each batch from the run's progress:
    constant, cosine or linear warmup then cosine, from each optimizer's rate at the start of
    `fit` (a fine-tuning phase recompiled at its own rate starts from that) down to
    `train.min_learning_rate`. With an unknown number of steps per epoch it moves per epoch."""

    def __init__(self, train: TrainConfig):
        super().__init__()
        self.schedule = train.lr_schedule
        self.warmup_fraction = train.warmup_fraction if self.schedule == "warmup_cosine" else 0.0
        self.floor = train.min_learning_rate
        self.base: dict[int, float] = {}
        self.step = 0

    def on_train_begin(self, logs=None):
        self.step = 0
        self.total = (self.params.get("steps") or 1) * max(1, self.params.get("epochs") or 1)
        self.per_batch = bool(self.params.get("steps"))
        self.base = {id(o): current_rate(o) for o in optimizers_of(self.model)}

    def rate(self, base: float, progress: float) -> float:
        """The rate at `progress` in [0, 1] of the run."""
        if self.schedule == "constant":
            return base
        if progress < self.warmup_fraction:
            return base * progress / self.warmup_fraction
        decay = (progress - self.warmup_fraction) / (1 - self.warmup_fraction)
        return self.floor + (base - self.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, decay)))

    def apply(self, progress: float) -> None:
        for optimizer in optimizers_of(self.model):
            if id(optimizer) not in self.base:
                self.base[id(optimizer)] = current_rate(optimizer)
            optimizer.learning_rate = self.rate(self.base[id(optimizer)], progress)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_batch and self.schedule != "constant":
            self.apply(self.step / self.total)
        self.step += 1

    def on_epoch_begin(self, epoch, logs=None):
        if not self.per_batch and self.schedule != "constant":
            self.apply(epoch / self.total)


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
        shuffle_buffer_mb=train.shuffle_buffer_mb,
        cache_mb=train.input_cache_mb,
    )
    val = (
        make_tf_dataset(
            val_split,
            train.batch_size,
            False,
            cache=input_cache(train, "val"),
            cache_mb=train.input_cache_mb,
        )
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


def fit_phase(
    phase: int,
    model: keras.Model,
    prepared: PreparedData,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    log: RunLog,
    epochs: int,
    offset: int = 0,
) -> History:
    """Fit one phase of a multi-phase run (frozen, then unfrozen): its epochs numbered after
    the earlier phases' (one continuous curve per metric), its trainable count logged as
    `phase<N>_trainable_params`."""
    for callback in callbacks:
        if isinstance(callback, EpochLogger) and not callback.prefix:
            callback.step_offset = offset
    log.params({f"phase{phase}_trainable_params": trainable_count(model)})
    return fit(model, prepared, train, callbacks, epochs=epochs)
