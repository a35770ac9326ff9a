"""Multilayer perceptron for tabular rows (or flattened images)."""

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
    rescale_pixels,
)


@dataclasses.dataclass(frozen=True)
class MlpConfig(StrictConfig):
    """A dense stack.

    Args:
        inputs: filled from the dataset.
        hidden_units: width of each hidden layer, in order.
        activation: hidden-layer activation.
        dropout: dropout after each hidden layer.
    """

    inputs: InputSpec | None = None
    hidden_units: tuple[int, ...] = (128, 64)
    activation: Literal["relu", "gelu", "tanh", "selu", "elu", "swish"] = "relu"
    dropout: float = 0.2

    def validate(self) -> None:
        require(len(self.hidden_units) > 0, "hidden_units needs at least one layer")
        require(all(u > 0 for u in self.hidden_units), "hidden_units must be positive")
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")


def build_mlp(config: MlpConfig) -> keras.Model:
    """Return an uncompiled MLP classifier; preprocessing (scaling) is inside the model."""
    spec = require_inputs(config.inputs, "mlp", ("tabular", "image"))
    require(spec.task == "classification", "mlp is a classifier: use a classification dataset")
    inputs = model_input(spec)
    if spec.kind == "image":
        x = keras.layers.Flatten(name="flatten")(rescale_pixels(inputs, spec))  # (B, H*W*C)
    else:
        x = normalizer(spec)(inputs)  # (B, F)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation=config.activation, name=f"dense_{i}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    return keras.Model(inputs, classification_head(x, spec), name="mlp")


# Presets by role and size.
PRESETS = {
    "mlp_small": {"hidden_units": [64, 32], "dropout": 0.1},
    "mlp_base": {"hidden_units": [256, 128, 64], "dropout": 0.3},
}

FAMILY = ModelFamily(MlpConfig, build_mlp, "dense stack for tabular rows", PRESETS)
