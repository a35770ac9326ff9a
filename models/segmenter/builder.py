"""A U-Net-style segmenter: an encoder of conv blocks, a decoder that upsamples back to the
image size joining the encoder's maps of the same size (skip connections), and a per-pixel
softmax over the classes (class 0 is the background).

The model takes raw pixels (rescaled inside it) and answers with

    mask (B, H, W) int32, the most probable class of each pixel, and
    probabilities (B, H, W, K) float32, the per-pixel softmax,

and trains through its `probabilities` output (`training_view`).
"""

from __future__ import annotations

import dataclasses

import keras

from kerasops.config import StrictConfig, require
from kerasops.models.inputs import InputSpec, model_input, require_inputs, rescale_pixels

PROBABILITIES_LAYER = "probabilities"
OUTPUT_KEYS = ("mask", "probabilities")


@dataclasses.dataclass(frozen=True)
class SegmenterConfig(StrictConfig):
    """An encoder-decoder with skip connections and a per-pixel softmax.

    Args:
        inputs: filled from the dataset (an image segmentation set).
        filters: filters of each encoder block (two 3x3 conv/batch-norm/ReLU, then 2x2 pooling);
            the decoder mirrors them. Image sides must be multiples of `2 ** len(filters)`.
        bottleneck_filters: filters of the block between encoder and decoder (0: twice the
            last encoder block's).
        dropout: dropout rate at the bottleneck.
        batchnorm_momentum: moving-statistics momentum of the batch norms.
    """

    inputs: InputSpec | None = None
    filters: tuple[int, ...] = (16, 32, 64)
    bottleneck_filters: int = 0
    dropout: float = 0.0
    batchnorm_momentum: float = 0.9

    def validate(self) -> None:
        require(len(self.filters) > 0, "filters needs at least one block")
        require(all(f > 0 for f in self.filters), "filters must be positive")
        require(self.bottleneck_filters >= 0, "bottleneck_filters must be 0 or positive")
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        require(0.0 < self.batchnorm_momentum < 1.0, "batchnorm_momentum must be in (0, 1)")


@keras.saving.register_keras_serializable(package="kerasops")
class ArgmaxMask(keras.layers.Layer):
    """Per-pixel probabilities (B, H, W, K) to the most probable class ids (B, H, W) int32."""

    def call(self, probabilities):
        return keras.ops.cast(keras.ops.argmax(probabilities, axis=-1), "int32")

    def compute_output_spec(self, probabilities):
        return keras.KerasTensor(probabilities.shape[:-1], dtype="int32")


def conv_block(
    x: keras.KerasTensor, filters: int, name: str, config: SegmenterConfig
) -> keras.KerasTensor:
    """Two 3x3 conv/batch-norm/ReLU units; the spatial size is kept."""
    for j in range(2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{j}")(
            x
        )
        x = keras.layers.BatchNormalization(
            momentum=config.batchnorm_momentum, name=f"{name}_bn{j}"
        )(x)
        x = keras.layers.ReLU(name=f"{name}_relu{j}")(x)
    return x


def build_segmenter(config: SegmenterConfig) -> keras.Model:
    """Return an uncompiled segmenter: raw pixels in, `mask` and `probabilities` out."""
    spec = require_inputs(config.inputs, "segmenter", ("image",))
    require(spec.task == "segmentation", f"segmenter needs a segmentation dataset, not {spec.task}")
    require(len(spec.shape) == 3, f"segmenter needs (height, width, channels), got {spec.shape}")
    stride = 2 ** len(config.filters)
    require(
        spec.shape[0] % stride == 0 and spec.shape[1] % stride == 0,
        f"image sides {spec.shape[:2]} must be multiples of {stride} (2 ** len(filters)); "
        "use fewer blocks or another image size",
    )
    inputs = model_input(spec)  # (B, H, W, C)
    x = rescale_pixels(inputs, spec)
    skips = []
    for i, filters in enumerate(config.filters):
        x = conv_block(x, filters, f"down{i}", config)  # (B, H/2^i, W/2^i, F)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"down{i}_pool")(x)  # halves the map
    x = conv_block(x, config.bottleneck_filters or 2 * config.filters[-1], "bottleneck", config)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="bottleneck_dropout")(x)
    for i in reversed(range(len(config.filters))):
        filters = config.filters[i]
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{i}_upsample")(x)
        x = keras.layers.Concatenate(name=f"up{i}_skip")([x, skips[i]])  # (B, h, w, 2F)
        x = conv_block(x, filters, f"up{i}", config)
    # The head stays float32 under mixed precision.
    logits = keras.layers.Conv2D(spec.num_outputs, 1, dtype="float32", name="logits")(x)
    probabilities = keras.layers.Softmax(dtype="float32", name=PROBABILITIES_LAYER)(logits)
    mask = ArgmaxMask(name="mask")(probabilities)  # (B, H, W)
    outputs = dict(zip(OUTPUT_KEYS, (mask, probabilities), strict=True))
    return keras.Model(inputs, outputs, name="segmenter")


def training_view(model: keras.Model) -> keras.Model:
    """The segmenter from its input to the per-pixel `probabilities`, sharing its weights."""
    output = model.get_layer(PROBABILITIES_LAYER).output
    return keras.Model(model.inputs, output, name="segmenter_probabilities")
