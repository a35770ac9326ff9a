"""Custom layers shared by the architecture families.

Each takes `**kwargs`, keeps one attribute per constructor argument, implements `get_config`
and is registered under the `kerasops` package, so saved models load back (STYLE 4).
"""

from __future__ import annotations

import keras
from keras import ops

from kerasops.config import require


@keras.saving.register_keras_serializable(package="kerasops")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding; token id 0 is padding and masked.

    Args:
        vocabulary_size: number of token ids.
        sequence_length: maximum sequence length.
        embed_dim: embedding width.
        mask_zero: emit a padding mask for id 0.
    """

    def __init__(
        self,
        vocabulary_size: int,
        sequence_length: int,
        embed_dim: int,
        mask_zero: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embed_dim = embed_dim
        self.mask_zero = mask_zero
        self.token_embedding = keras.layers.Embedding(vocabulary_size, embed_dim, name="token")
        self.position_embedding = keras.layers.Embedding(
            sequence_length, embed_dim, name="position"
        )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build((input_shape[-1],))
        super().build(input_shape)

    def call(self, token_ids):
        positions = ops.arange(ops.shape(token_ids)[-1])  # (T,)
        return self.token_embedding(token_ids) + self.position_embedding(positions)  # (B, T, C)

    def compute_mask(self, token_ids, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(token_ids, 0)  # (B, T)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "embed_dim": self.embed_dim,
            "mask_zero": self.mask_zero,
        }


def require_attention_sizes(embed_dim: int, num_heads: int, dropout: float) -> None:
    """Raise ConfigError unless the widths fit multi-head attention and dropout is in [0, 1)."""
    require(embed_dim > 0 and num_heads > 0, "embed_dim and num_heads must be > 0")
    require(
        embed_dim % num_heads == 0,
        f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}",
    )
    require(0.0 <= dropout < 1.0, "dropout must be in [0, 1)")


@keras.saving.register_keras_serializable(package="kerasops")
class TransformerEncoderBlock(keras.layers.Layer):
    """Post-norm encoder block: self-attention and a feed-forward net, each residual + LayerNorm.

    Args:
        embed_dim: model width.
        num_heads: attention heads.
        ff_dim: hidden width of the feed-forward net.
        dropout: dropout rate after attention and feed-forward.
        causal: mask future positions (decoder-style self-attention).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        causal: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.causal = causal
        self.supports_masking = True
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=embed_dim // num_heads, dropout=dropout, name="attention"
        )
        self.feed_forward = keras.Sequential(
            [
                keras.layers.Dense(ff_dim, activation="gelu"),
                keras.layers.Dense(embed_dim),
            ],
            name="feed_forward",
        )
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.output_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="output_norm")
        self.attention_dropout = keras.layers.Dropout(dropout)
        self.output_dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.feed_forward.build(input_shape)
        self.attention_norm.build(input_shape)
        self.output_norm.build(input_shape)
        super().build(input_shape)

    def call(self, x, mask=None, training=None):
        attention_mask = None
        if mask is not None:
            attention_mask = ops.expand_dims(ops.cast(mask, "bool"), axis=1)  # (B, 1, T)
        attended = self.attention(
            x, x, attention_mask=attention_mask, use_causal_mask=self.causal, training=training
        )  # (B, T, C)
        x = self.attention_norm(x + self.attention_dropout(attended, training=training))
        transformed = self.feed_forward(x)  # (B, T, C)
        return self.output_norm(x + self.output_dropout(transformed, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "causal": self.causal,
        }


@keras.saving.register_keras_serializable(package="kerasops")
class LastValueResidual(keras.layers.Layer):
    """Forecast = last observed value + a learned change, de-standardized.

    The network predicts the standardized change from the window's last value, so an untrained
    model starts at the naive last-value forecast and training can only have to improve on it.

    Args:
        mean: the series' training mean.
        std: the series' training standard deviation.
    """

    def __init__(self, mean: float, std: float, **kwargs):
        super().__init__(**kwargs)
        self.mean = mean
        self.std = std

    def call(self, inputs):
        raw_window, change = inputs  # (B, W, 1), (B, H)
        last = raw_window[:, -1, :1]  # (B, 1)
        return last + change * self.std  # (B, H)

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="kerasops")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the unmasked time steps; an all-padding sequence (empty text) pools to zeros."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        if mask is None:
            return ops.mean(x, axis=1)
        weights = ops.expand_dims(ops.cast(mask, x.dtype), axis=-1)  # (B, T, 1)
        total = ops.sum(x * weights, axis=1)  # (B, C)
        return total / ops.maximum(ops.sum(weights, axis=1), 1.0)  # (B, C)

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="kerasops")
class TransformerDecoderBlock(keras.layers.Layer):
    """Post-norm decoder block: causal self-attention, cross-attention over an encoder's output,
    and a feed-forward net, each residual + LayerNorm.

    Called as `block(x, context, context_mask=mask)`: x (B, T, C) target states, context
    (B, S, C) encoder states, context_mask (B, S) true for real (non-padding) source tokens.

    Args:
        embed_dim: model width.
        num_heads: attention heads.
        ff_dim: hidden width of the feed-forward net.
        dropout: dropout rate after each sub-layer.
    """

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        key_dim = embed_dim // num_heads
        self.self_attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=key_dim, dropout=dropout, name="self_attention"
        )
        self.cross_attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=key_dim, dropout=dropout, name="cross_attention"
        )
        self.feed_forward = keras.Sequential(
            [keras.layers.Dense(ff_dim, activation="gelu"), keras.layers.Dense(embed_dim)],
            name="feed_forward",
        )
        self.norms = [
            keras.layers.LayerNormalization(epsilon=1e-6, name=f"norm_{i}") for i in range(3)
        ]
        self.dropouts = [keras.layers.Dropout(dropout) for _ in range(3)]

    def build(self, x_shape, context_shape, context_mask_shape=None):
        self.self_attention.build(x_shape, x_shape)
        self.cross_attention.build(x_shape, context_shape)
        self.feed_forward.build(x_shape)
        for norm in self.norms:
            norm.build(x_shape)
        super().build(x_shape)

    def call(self, x, context, context_mask=None, training=None):
        cross_mask = None
        if context_mask is not None:
            cross_mask = ops.expand_dims(ops.cast(context_mask, "bool"), axis=1)  # (B, 1, S)
        attended = self.self_attention(x, x, use_causal_mask=True, training=training)  # (B, T, C)
        x = self.norms[0](x + self.dropouts[0](attended, training=training))
        attended = self.cross_attention(
            x, context, attention_mask=cross_mask, training=training
        )  # (B, T, C)
        x = self.norms[1](x + self.dropouts[1](attended, training=training))
        transformed = self.feed_forward(x)  # (B, T, C)
        return self.norms[2](x + self.dropouts[2](transformed, training=training))

    def compute_output_shape(self, x_shape, context_shape=None, context_mask_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="kerasops")
class DropMask(keras.layers.Layer):
    """Passes its input through without the Keras mask: for states whose padding the next model
    receives as an explicit mask (an encoder's output feeding a decoder's cross-attention)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        return ops.copy(x)  # a new tensor: the input's own mask attribute stays behind

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kerasops")
class PatchExtraction(keras.layers.Layer):
    """Cut images into non-overlapping square patches, each flattened to a vector.

    Args:
        patch_size: side of a square patch; must divide the image's height and width.
    """

    def __init__(self, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        _, height, width, channels = images.shape
        p = self.patch_size
        x = ops.reshape(images, (-1, height // p, p, width // p, p, channels))  # (B, h, p, w, p, C)
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, h, w, p, p, C)
        return ops.reshape(x, (-1, (height // p) * (width // p), p * p * channels))  # (B, N, P)

    def compute_output_shape(self, input_shape):
        _, height, width, channels = input_shape
        p = self.patch_size
        return (input_shape[0], (height // p) * (width // p), p * p * channels)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kerasops")
class PatchEmbedding(keras.layers.Layer):
    """Linear patch projection plus a learned position embedding, with an optional class token.

    Args:
        num_patches: patches per image.
        embed_dim: embedding width.
        class_token: prepend a learned `[CLS]` vector (position 0) whose output feeds the head.
    """

    def __init__(self, num_patches: int, embed_dim: int, class_token: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.embed_dim = embed_dim
        self.class_token = class_token
        self.projection = keras.layers.Dense(embed_dim, name="projection")
        self.position_embedding = keras.layers.Embedding(
            num_patches + int(class_token), embed_dim, name="position"
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.position_embedding.build((self.num_patches + int(self.class_token),))
        if self.class_token:
            self.cls = self.add_weight(
                shape=(1, 1, self.embed_dim), initializer="zeros", name="class_token"
            )
        super().build(input_shape)

    def call(self, patches):
        x = self.projection(patches)  # (B, N, C)
        if self.class_token:
            cls = ops.tile(ops.cast(self.cls, x.dtype), (ops.shape(x)[0], 1, 1))  # (B, 1, C)
            x = ops.concatenate([cls, x], axis=1)  # (B, N+1, C)
        positions = ops.arange(self.num_patches + int(self.class_token))
        return x + self.position_embedding(positions)  # (B, T, C)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches + int(self.class_token), self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "embed_dim": self.embed_dim,
            "class_token": self.class_token,
        }
