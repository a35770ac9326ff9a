"""Recurrent networks for text classification and time-series forecasting."""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from kerasops.config import StrictConfig, require
from kerasops.models.family import ModelFamily
from kerasops.models.inputs import (
    InputSpec,
    classification_head,
    model_input,
    normalizer,
    require_inputs,
    text_vectorizer,
    vocabulary_size,
)
from kerasops.models.layers import LastValueResidual

CELLS = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


@dataclasses.dataclass(frozen=True)
class RnnConfig(StrictConfig):
    """A stack of recurrent layers.

    Args:
        inputs: filled from the dataset (text or timeseries).
        cell: simple, lstm or gru.
        units: width of each recurrent layer, in order.
        bidirectional: read the sequence both ways.
        embed_dim: token embedding width (text only).
        dropout: dropout on the last recurrent output.
    """

    inputs: InputSpec | None = None
    cell: Literal["simple", "lstm", "gru"] = "lstm"
    units: tuple[int, ...] = (64,)
    bidirectional: bool = False
    embed_dim: int = 64
    dropout: float = 0.2

    def validate(self) -> None:
        require(len(self.units) > 0, "units needs at least one recurrent layer")
        require(all(u > 0 for u in self.units), "units must be positive")
        require(self.embed_dim > 0, "embed_dim must be positive")
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")


def recurrent_stack(x: keras.KerasTensor, config: RnnConfig) -> keras.KerasTensor:
    """Stacked recurrent layers; all but the last return sequences."""
    for i, units in enumerate(config.units):
        last = i == len(config.units) - 1
        layer = CELLS[config.cell](units, return_sequences=not last, name=f"{config.cell}_{i}")
        if config.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)  # (B, T, U) or, last, (B, U)
    return keras.layers.Dropout(config.dropout, name="dropout")(x)


def build_rnn(config: RnnConfig) -> keras.Model:
    """Return an uncompiled RNN: a text classifier or a residual time-series forecaster."""
    spec = require_inputs(config.inputs, "rnn", ("text", "timeseries"))
    inputs = model_input(spec)
    if spec.kind == "text":
        require(spec.task == "classification", "a text rnn is a classifier")
        token_ids = text_vectorizer(spec)(inputs)  # (B, T)
        x = keras.layers.Embedding(
            vocabulary_size(spec), config.embed_dim, mask_zero=True, name="embedding"
        )(token_ids)  # (B, T, E)
        outputs = classification_head(recurrent_stack(x, config), spec)
    else:
        require(spec.task == "regression", "a time-series rnn forecasts (regression)")
        x = normalizer(spec)(inputs)  # (B, W, 1)
        change = keras.layers.Dense(spec.num_outputs, kernel_initializer="zeros", name="change")(
            recurrent_stack(x, config)
        )  # (B, H), standardized
        outputs = LastValueResidual(
            mean=spec.mean[0], std=spec.variance[0] ** 0.5, dtype="float32", name="forecast"
        )([inputs, change])  # (B, H)
    return keras.Model(inputs, outputs, name="rnn")


# Presets by cell, role and size.
PRESETS = {
    "rnn_lstm_small": {"cell": "lstm", "units": [32]},
    "rnn_gru_small": {"cell": "gru", "units": [32]},
    "rnn_bilstm_base": {"cell": "lstm", "units": [64, 32], "bidirectional": True},
    "rnn_simple_small": {"cell": "simple", "units": [32]},
}

FAMILY = ModelFamily(
    RnnConfig, build_rnn, "SimpleRNN/LSTM/GRU text classifier or forecaster", PRESETS
)
