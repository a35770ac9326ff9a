"""Transformer encoder classifier for text."""

from __future__ import annotations

import dataclasses

import keras

from kerasops.config import StrictConfig, require
from kerasops.models.family import ModelFamily
from kerasops.models.inputs import (
    InputSpec,
    classification_head,
    model_input,
    require_inputs,
    text_vectorizer,
    vocabulary_size,
)
from kerasops.models.layers import (
    MaskedMeanPooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
    require_attention_sizes,
)


@dataclasses.dataclass(frozen=True)
class TransformerConfig(StrictConfig):
    """Token + position embedding, encoder blocks, masked average pooling, softmax.

    Args:
        inputs: filled from the dataset (text).
        embed_dim: model width (divisible by num_heads).
        num_heads: attention heads.
        ff_dim: feed-forward hidden width.
        num_layers: encoder blocks.
        dropout: dropout inside blocks and before the head.
    """

    inputs: InputSpec | None = None
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.1

    def validate(self) -> None:
        require_attention_sizes(self.embed_dim, self.num_heads, self.dropout)
        require(self.ff_dim > 0 and self.num_layers > 0, "ff_dim and num_layers must be > 0")


def build_transformer(config: TransformerConfig) -> keras.Model:
    """Return an uncompiled Transformer encoder text classifier taking raw strings."""
    spec = require_inputs(config.inputs, "transformer", ("text",))
    require(spec.task == "classification", "transformer is a classifier")
    inputs = model_input(spec)  # (B,) strings
    token_ids = text_vectorizer(spec)(inputs)  # (B, T)
    x = TokenAndPositionEmbedding(
        vocabulary_size(spec), spec.sequence_length, config.embed_dim, name="embedding"
    )(token_ids)  # (B, T, C)
    for i in range(config.num_layers):
        x = TransformerEncoderBlock(
            config.embed_dim, config.num_heads, config.ff_dim, config.dropout, name=f"encoder_{i}"
        )(x)  # (B, T, C)
    x = MaskedMeanPooling(name="pool")(x)  # (B, C), padding masked out
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    return keras.Model(inputs, classification_head(x, spec), name="transformer")


# Presets by role and size.
PRESETS = {
    "transformer_tiny": {"embed_dim": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1},
    "transformer_small": {"embed_dim": 64, "num_heads": 4, "ff_dim": 128, "num_layers": 2},
}

FAMILY = ModelFamily(
    TransformerConfig, build_transformer, "Transformer encoder text classifier", PRESETS
)
