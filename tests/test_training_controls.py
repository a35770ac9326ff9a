"""Training controls: gradient clipping, learning-rate schedules, gradient accumulation and the
stop on a non-finite loss; each validated, applied in `fit` and recorded in MLflow."""

from __future__ import annotations

import math

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.data.prepared import Split
from kerasops.errors import ConfigError
from kerasops.models.inputs import InputSpec
from kerasops.models.rnn import RnnConfig, build_rnn
from kerasops.models.training import (
    ScheduledLearningRate,
    TrainConfig,
    TrainingDiverged,
    compile_model,
    fit_on,
    learning_rate_callbacks,
    make_optimizer,
    raise_if_diverged,
    standard_callbacks,
)
from kerasops.pipelines.cli import main
from kerasops.pipelines.config import load_params
from kerasops.pipelines.tracking import store as tracking
from tests.conftest import train_run


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"clipnorm": 0}, "train.clipnorm must be positive"),
        ({"clipvalue": -1.0}, "train.clipvalue must be positive"),
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "train.clipnorm and train.global_clipnorm"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"warmup_fraction": 1.0}, "train.warmup_fraction"),
        ({"min_learning_rate": 0.01, "learning_rate": 0.001}, "train.min_learning_rate"),
        ({"plateau_factor": 1.5}, "train.plateau_factor"),
        ({"gradient_accumulation_steps": 0}, "train.gradient_accumulation_steps"),
        ({"gradient_accumulation_steps": 2, "strategy": "mirrored"}, "strategy: default"),
        ({"clipnorm": "big"}, "clipnorm"),
    ],
)
def test_bad_training_controls_are_refused_by_name(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_a_bad_control_on_the_command_line_is_one_line_and_exit_2(project, capsys):
    code = main(["train", "mlp", "--dataset", "digits", "--set", "clipvalue=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "train.clipvalue must be positive" in err


def test_the_optimizer_clips_and_accumulates_as_configured():
    clipped = make_optimizer(TrainConfig(optimizer="sgd", global_clipnorm=2.0))
    assert clipped.global_clipnorm == 2.0 and clipped.clipnorm is None
    assert make_optimizer(TrainConfig(clipvalue=0.5)).clipvalue == 0.5
    assert make_optimizer(TrainConfig()).gradient_accumulation_steps is None

    # with 2 steps accumulated, the weights move on every second batch only
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    train = TrainConfig(optimizer="sgd", learning_rate=0.1, gradient_accumulation_steps=2)
    compile_model(model, "regression", train)
    x, y = np.ones((4, 3), "float32"), np.full((4, 1), 5.0, "float32")
    seen = [model.get_weights()[0].copy()]
    for start in range(0, 4, 1):
        model.train_on_batch(x[start : start + 1], y[start : start + 1])
        seen.append(model.get_weights()[0].copy())
    moved = [not np.allclose(a, b) for a, b in zip(seen, seen[1:], strict=False)]
    assert moved == [False, True, False, True]


def test_schedules_follow_their_curves():
    cosine = ScheduledLearningRate(TrainConfig(lr_schedule="cosine", min_learning_rate=1e-4))
    assert cosine.rate(1e-2, 0.0) == pytest.approx(1e-2)
    assert cosine.rate(1e-2, 0.5) == pytest.approx(1e-4 + (1e-2 - 1e-4) / 2)
    assert cosine.rate(1e-2, 1.0) == pytest.approx(1e-4)
    warm = ScheduledLearningRate(TrainConfig(lr_schedule="warmup_cosine", warmup_fraction=0.2))
    assert warm.rate(1.0, 0.0) == 0.0
    assert warm.rate(1.0, 0.1) == pytest.approx(0.5)
    assert warm.rate(1.0, 0.2) == pytest.approx(1.0)
    assert warm.rate(1.0, 0.6) == pytest.approx(0.5)
    assert all(
        warm.rate(1.0, p / 10) >= warm.rate(1.0, (p + 1) / 10) for p in range(2, 10)
    )  # falls after the warmup


def tiny_fit(train: TrainConfig, trainable: bool = True) -> dict[str, list[float]]:
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(1, trainable=trainable)
    model = keras.Sequential([keras.Input((3,)), dense])
    compile_model(model, "regression", train)
    rng = np.random.default_rng(0)
    data = Split(rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=(64, 1)))
    callbacks = learning_rate_callbacks(train)
    history = fit_on(model, data, data, train, callbacks)
    return history


def test_cosine_moves_the_rate_every_batch_and_logs_it():
    train = TrainConfig(epochs=4, batch_size=16, learning_rate=0.1, lr_schedule="cosine")
    rates = tiny_fit(train)["learning_rate"]
    # 4 steps an epoch, 16 in all: the rate in epoch e's logs is the one of its last batch
    expected = [0.05 * (1 + math.cos(math.pi * (4 * e + 3) / 16)) for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-5)


def test_reduce_on_plateau_cuts_the_rate_when_validation_stalls():
    train = TrainConfig(
        epochs=4,
        batch_size=32,
        learning_rate=0.1,
        lr_schedule="reduce_on_plateau",
        plateau_factor=0.5,
        plateau_patience=1,
    )
    rates = tiny_fit(train, trainable=False)["learning_rate"]  # nothing learns: a flat val_loss
    assert rates == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def long_sequence_regression(steps: int = 200, count: int = 512):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, steps, 1)).astype("float32")
    y = (3 * x[:, -20:, 0].mean(axis=1, keepdims=True)).astype("float32")  # variance 0.45
    spec = InputSpec(
        kind="timeseries",
        task="regression",
        shape=(steps, 1),
        num_outputs=1,
        mean=(0.0,),
        variance=(1.0,),
    )
    return Split(x[:448], y[:448]), Split(x[448:], y[448:]), spec


def fit_simple_rnn(tmp_path, learning_rate: float, **controls):
    """A SimpleRNN over 200 steps with SGD at a rate that makes its gradients explode."""
    train_split, val_split, spec = long_sequence_regression()
    train = TrainConfig(
        epochs=5, batch_size=32, learning_rate=learning_rate, optimizer="sgd", **controls
    )
    keras.utils.set_random_seed(0)
    model = build_rnn(RnnConfig(inputs=spec, cell="simple", units=(32,), dropout=0.0))
    compile_model(model, "regression", train)
    callbacks = standard_callbacks(train, tmp_path / "best.keras")
    return callbacks, fit_on(model, train_split, val_split, train, callbacks), train_split.y


def test_a_simple_rnn_on_long_sequences_explodes_without_clipping_and_learns_with_it(tmp_path):
    callbacks, history, _ = fit_simple_rnn(tmp_path, 0.1)
    exploded = any(c.diverged for c in callbacks if hasattr(c, "diverged"))
    assert exploded or max(history["loss"]) > 1e3

    callbacks, history, targets = fit_simple_rnn(tmp_path, 0.1, clipnorm=0.1)
    raise_if_diverged(callbacks)  # no raise
    assert len(history["loss"]) == 5
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()
    assert history["val_loss"][-1] < 0.5 * float(np.var(targets))  # beats predicting the mean


def test_a_non_finite_loss_stops_the_fit_and_says_where(tmp_path):
    callbacks, history, _ = fit_simple_rnn(tmp_path, 0.3)
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d, batch \d+: loss"):
        raise_if_diverged(callbacks)
    assert len(history["loss"]) < 5  # stopped at the first non-finite loss


@pytest.mark.slow
def test_a_nan_loss_fails_the_run_in_one_line_and_keeps_the_last_good_outputs(project, capsys):
    params = load_params(project / "params.yaml")
    good = train_run(params, "mlp", "digits", overrides=["epochs=1", "lr_schedule=cosine"])
    before = (good.run_dir / "metrics.json").read_text()
    tracking.configure(params)
    logged = MlflowClient().get_run(good.run_id).data
    assert logged.params["train.lr_schedule"] == "cosine"
    assert logged.params["train.clipnorm"] == "None"
    assert [m.step for m in MlflowClient().get_metric_history(good.run_id, "learning_rate")] == [1]

    code = main(
        ["train", "mlp", "--dataset", "digits"]
        + ["--set", "epochs=2", "--set", "optimizer=sgd", "--set", "learning_rate=1e30"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert [line for line in err if "training diverged" in line] == err[-1:]
    assert "train.clipnorm" in err[-1]
    tracking.configure(params)
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("tests").experiment_id],
        order_by=["attributes.start_time DESC"],
    )
    assert runs[0].info.status == "FAILED"
    assert runs[1].info.status == "FINISHED"
    assert (good.run_dir / "metrics.json").read_text() == before


def test_the_gan_steps_its_own_pair_of_optimizers_and_refuses_a_plateau_schedule():
    from kerasops.models.gan.builder import AdversarialTrainer
    from kerasops.models.gan.recipe import GanRecipe
    from kerasops.models.training import optimizers_of

    with pytest.raises(ConfigError, match="reduce_on_plateau watches val_loss"):
        GanRecipe().compile(None, None, TrainConfig(lr_schedule="reduce_on_plateau"))
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64)])
    critic = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    trainer = AdversarialTrainer(generator, critic, 4)
    pair = [keras.optimizers.Adam(1e-3), keras.optimizers.Adam(2e-3)]
    trainer.compile(d_optimizer=pair[0], g_optimizer=pair[1])
    assert optimizers_of(trainer) == pair  # not the placeholder of Keras' own compile
