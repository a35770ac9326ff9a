"""Autoencoders (dense or convolutional, with a bottleneck) and their anomaly scorer.

The autoencoder maps raw pixels to a reconstruction in `[0, 1]` (pixels / pixel_max). In
`denoise` mode Gaussian noise is added to its input during training only, so it learns to
remove it. `build_anomaly_scorer` wraps a trained autoencoder into the served model: raw image
in, `anomaly_score` (mean squared reconstruction error) and `is_anomaly` (score > threshold) out.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import keras
from keras import ops

from kerasops.config import StrictConfig, require
from kerasops.models.inputs import InputSpec, model_input, require_inputs, rescale_pixels


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(StrictConfig):
    """Encoder -> bottleneck -> decoder, trained to give back its (clean) input.

    Args:
        inputs: filled from the dataset.
        architecture: `dense` (flattened pixels) or `conv` (strided convolutions, each halving
            the image; the image side must be divisible by 2 ** len(filters)).
        hidden_units: dense encoder widths (the decoder mirrors them).
        filters: conv encoder filters (the decoder mirrors them).
        bottleneck: width of the code between encoder and decoder.
        mode: `reconstruct`, or `denoise` (noise on the input while training only).
        noise_stddev: standard deviation of that noise, in pixels / pixel_max.
        anomaly_class: label held out of training and validation and used as the anomalies of
            the evaluation; -1 holds none out (no anomaly metrics then).
        threshold_percentile: the anomaly threshold is this percentile of the validation
            split's reconstruction errors (so about 100 - p % of normal images are flagged).
    """

    inputs: InputSpec | None = None
    architecture: Literal["dense", "conv"] = "dense"
    hidden_units: tuple[int, ...] = (128, 64)
    filters: tuple[int, ...] = (16, 32)
    bottleneck: int = 16
    mode: Literal["reconstruct", "denoise"] = "reconstruct"
    noise_stddev: float = 0.2
    anomaly_class: int = 9
    threshold_percentile: float = 95.0

    def validate(self) -> None:
        require(self.bottleneck >= 1, "bottleneck must be at least 1")
        require(all(u > 0 for u in self.hidden_units), "hidden_units must be positive")
        require(len(self.filters) > 0, "filters needs at least one block")
        require(all(f > 0 for f in self.filters), "filters must be positive")
        require(self.noise_stddev >= 0.0, "noise_stddev must be >= 0")
        require(self.anomaly_class >= -1, "anomaly_class must be a label, or -1 for none")
        require(
            0.0 < self.threshold_percentile <= 100.0, "threshold_percentile must be in (0, 100]"
        )


def dense_codec(x: keras.KerasTensor, config: AutoencoderConfig, shape: tuple[int, ...]):
    """Flatten -> dense encoder -> bottleneck -> mirrored decoder -> sigmoid pixels."""
    x = keras.layers.Flatten(name="flatten")(x)  # (B, H*W*C)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"encoder{i}")(x)
    x = keras.layers.Dense(config.bottleneck, activation="relu", name="bottleneck")(x)  # (B, Z)
    for i, units in enumerate(reversed(config.hidden_units)):
        x = keras.layers.Dense(units, activation="relu", name=f"decoder{i}")(x)
    x = keras.layers.Dense(math.prod(shape), activation="sigmoid", dtype="float32", name="pixels")(
        x
    )  # float32 even under mixed precision, like every served output
    return keras.layers.Reshape(shape, dtype="float32", name="reconstruction")(x)  # (B, H, W, C)


def conv_codec(x: keras.KerasTensor, config: AutoencoderConfig, shape: tuple[int, ...]):
    """Strided conv encoder -> dense bottleneck -> transposed-conv decoder -> sigmoid pixels."""
    height, width, channels = shape
    scale = 2 ** len(config.filters)
    require(
        height % scale == 0 and width % scale == 0,
        f"conv autoencoder: image {height}x{width} is not divisible by 2**len(filters)={scale}",
    )
    for i, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(
            filters, 3, strides=2, padding="same", activation="relu", name=f"encoder{i}"
        )(x)  # (B, H/2^(i+1), W/2^(i+1), F)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(config.bottleneck, activation="relu", name="bottleneck")(x)  # (B, Z)
    code_shape = (height // scale, width // scale, config.filters[-1])
    x = keras.layers.Dense(math.prod(code_shape), activation="relu", name="expand")(x)
    x = keras.layers.Reshape(code_shape, name="unflatten")(x)
    for i, filters in enumerate(reversed(config.filters)):
        x = keras.layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", activation="relu", name=f"decoder{i}"
        )(x)  # (B, 2x, 2x, F)
    return keras.layers.Conv2D(
        channels, 3, padding="same", activation="sigmoid", dtype="float32", name="reconstruction"
    )(x)  # (B, H, W, C), float32 even under mixed precision


def build_autoencoder(config: AutoencoderConfig) -> keras.Model:
    """Return an uncompiled autoencoder: raw image -> reconstruction in [0, 1]."""
    spec = require_inputs(config.inputs, "autoencoder", ("image",))
    shape = tuple(spec.shape)
    require(len(shape) == 3, f"autoencoder needs (height, width, channels) images, got {shape}")
    inputs = model_input(spec)  # (B, H, W, C)
    x = rescale_pixels(inputs, spec)  # (B, H, W, C) in [0, 1]
    if config.mode == "denoise":
        x = keras.layers.GaussianNoise(config.noise_stddev, name="noise")(x)  # training only
    codec = dense_codec if config.architecture == "dense" else conv_codec
    return keras.Model(inputs, codec(x, config, shape), name=f"{config.architecture}_autoencoder")


@keras.saving.register_keras_serializable(package="kerasops")
class ReconstructionError(keras.layers.Layer):
    """Per-example mean squared error between the rescaled input and its reconstruction.

    Args:
        pixel_max: raw pixels are divided by it before the comparison.
    """

    def __init__(self, pixel_max: float, **kwargs):
        super().__init__(**kwargs)
        self.pixel_max = pixel_max

    def call(self, inputs):
        image, reconstruction = inputs  # (B, H, W, C) raw, (B, H, W, C) in [0, 1]
        diff = image / self.pixel_max - reconstruction
        return ops.mean(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)  # (B,)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "pixel_max": self.pixel_max}


@keras.saving.register_keras_serializable(package="kerasops")
class AnomalyFlag(keras.layers.Layer):
    """1.0 where the anomaly score exceeds the threshold chosen on validation data, else 0.0.

    Args:
        threshold: the score above which an example is an anomaly.
    """

    def __init__(self, threshold: float, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold

    def call(self, score):
        return ops.cast(ops.greater(score, self.threshold), "float32")  # (B,)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def build_anomaly_scorer(
    autoencoder: keras.Model, pixel_max: float, threshold: float
) -> keras.Model:
    """Wrap a trained autoencoder: raw image -> {anomaly_score, is_anomaly} (both (B,))."""
    image = keras.Input(shape=autoencoder.input_shape[1:], dtype="float32", name="image")
    reconstruction = autoencoder(image)  # (B, H, W, C)
    score = ReconstructionError(pixel_max, name="anomaly_score")([image, reconstruction])
    flag = AnomalyFlag(threshold, name="is_anomaly")(score)
    return keras.Model(image, {"anomaly_score": score, "is_anomaly": flag}, name="anomaly_scorer")
