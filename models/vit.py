"""Vision Transformer: image -> patches -> patch + position embedding -> encoder blocks -> head."""

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
from kerasops.models.layers import PatchEmbedding, PatchExtraction, TransformerEncoderBlock


@dataclasses.dataclass(frozen=True)
class VitConfig(StrictConfig):
    """A small ViT (Dosovitskiy et al., 2021) for little images such as 8x8 digits.

    Args:
        inputs: filled from the dataset.
        patch_size: side of the square patches; divides the image height and width.
        embed_dim: token width.
        num_heads: attention heads; divides `embed_dim`.
        ff_dim: hidden width of each block's feed-forward net.
        num_layers: encoder blocks.
        dropout: dropout inside the blocks and before the head.
        pooling: `class_token` reads the `[CLS]` token; `mean` averages the patch tokens.
    """

    inputs: InputSpec | None = None
    patch_size: int = 2
    embed_dim: int = 32
    num_heads: int = 2
    ff_dim: int = 64
    num_layers: int = 2
    dropout: float = 0.1
    pooling: Literal["class_token", "mean"] = "class_token"

    def validate(self) -> None:
        require(self.patch_size >= 1, "patch_size must be at least 1")
        require(self.embed_dim >= 1 and self.num_heads >= 1, "embed_dim, num_heads must be >= 1")
        require(self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads")
        require(self.ff_dim >= 1, "ff_dim must be at least 1")
        require(self.num_layers >= 1, "num_layers must be at least 1")
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")


def build_vit(config: VitConfig) -> keras.Model:
    """Return an uncompiled Vision Transformer classifier taking raw pixels."""
    spec = require_inputs(config.inputs, "vit", ("image",))
    require(len(spec.shape) == 3, f"vit needs (height, width, channels) images, got {spec.shape}")
    height, width, _ = spec.shape
    p = config.patch_size
    require(
        height % p == 0 and width % p == 0,
        f"patch_size {p} must divide the image size {height}x{width}",
    )
    inputs = model_input(spec)  # (B, H, W, C)
    x = rescale_pixels(inputs, spec)
    x = PatchExtraction(p, name="patches")(x)  # (B, N, p*p*C)
    use_cls = config.pooling == "class_token"
    num_patches = (height // p) * (width // p)
    x = PatchEmbedding(num_patches, config.embed_dim, class_token=use_cls, name="embed")(x)
    for i in range(config.num_layers):
        x = TransformerEncoderBlock(
            config.embed_dim, config.num_heads, config.ff_dim, config.dropout, name=f"encoder{i}"
        )(x)  # (B, T, C)
    if use_cls:
        x = keras.layers.Cropping1D((0, num_patches), name="class_token_output")(x)  # (B, 1, C)
        x = keras.layers.Flatten(name="pool")(x)  # (B, C)
    else:
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)  # (B, C)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    return keras.Model(inputs, classification_head(x, spec), name="vit")


# Presets by role and size.
PRESETS = {
    "vit_tiny": {"patch_size": 2, "embed_dim": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 2},
    "vit_small": {
        "patch_size": 2,
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "num_layers": 4,
    },
}

FAMILY = ModelFamily(VitConfig, build_vit, "Vision Transformer image classifier (patches)", PRESETS)
