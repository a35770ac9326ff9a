"""Convolutional classifier for images: conv -> batch norm -> ReLU -> pooling blocks."""

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
    require_inputs,
    rescale_pixels,
)


@dataclasses.dataclass(frozen=True)
class CnnConfig(StrictConfig):
    """Blocks of two same-padded convolutions, batch norm and ReLU, then 2x2 max pooling.

    Args:
        inputs: filled from the dataset.
        filters: filters of each block; each block halves the spatial size.
        kernel_size: convolution kernel size.
        pooling: how the last feature map becomes a vector.
        dense_units: hidden dense layer before the softmax (0 for none).
        dropout: dropout before the head.
        batchnorm_momentum: moving-statistics momentum; 0.9 suits small datasets, whose few
            steps per epoch leave 0.99's statistics far from the data for many epochs.
    """

    inputs: InputSpec | None = None
    filters: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    pooling: Literal["global_average", "flatten"] = "global_average"
    dense_units: int = 64
    dropout: float = 0.3
    batchnorm_momentum: float = 0.9

    def validate(self) -> None:
        require(len(self.filters) > 0, "filters needs at least one block")
        require(all(f > 0 for f in self.filters), "filters must be positive")
        require(self.kernel_size >= 1, "kernel_size must be at least 1")
        require(self.dense_units >= 0, "dense_units must be >= 0")
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        require(0.0 < self.batchnorm_momentum < 1.0, "batchnorm_momentum must be in (0, 1)")


def conv_block(x: keras.KerasTensor, config: CnnConfig, filters: int, index: int):
    """Two conv -> batch norm -> ReLU units, then 2x2 max pooling (when the map allows it)."""
    for j in range(2):
        x = keras.layers.Conv2D(
            filters,
            config.kernel_size,
            padding="same",
            use_bias=False,
            name=f"block{index}_conv{j}",
        )(x)
        x = keras.layers.BatchNormalization(
            momentum=config.batchnorm_momentum, name=f"block{index}_bn{j}"
        )(x)
        x = keras.layers.ReLU(name=f"block{index}_relu{j}")(x)
    if min(x.shape[1], x.shape[2]) >= 2:
        x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool")(x)  # (B, H/2, W/2, F)
    return x


def build_cnn(config: CnnConfig) -> keras.Model:
    """Return an uncompiled CNN classifier taking raw pixels."""
    spec = require_inputs(config.inputs, "cnn", ("image",))
    require(len(spec.shape) == 3, f"cnn needs (height, width, channels) images, got {spec.shape}")
    inputs = model_input(spec)  # (B, H, W, C)
    x = rescale_pixels(inputs, spec)
    for i, filters in enumerate(config.filters):
        x = conv_block(x, config, filters, i)
    if config.pooling == "global_average":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)  # (B, F)
    else:
        x = keras.layers.Flatten(name="pool")(x)  # (B, H*W*F)
    if config.dense_units:
        x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    return keras.Model(inputs, classification_head(x, spec), name="cnn")


# Presets by role and size.
PRESETS = {
    "cnn_small": {"filters": [32, 64], "dense_units": 64, "dropout": 0.3},
    "cnn_base": {"filters": [32, 64, 128], "dense_units": 128, "dropout": 0.4},
}

FAMILY = ModelFamily(CnnConfig, build_cnn, "conv/batch-norm/pooling image classifier", PRESETS)
