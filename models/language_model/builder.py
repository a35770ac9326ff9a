"""Decoder-only Transformer language model over characters, and its text-generation model."""

from __future__ import annotations

import dataclasses

import keras

from kerasops.config import StrictConfig, require
from kerasops.models.decoding import TextGenerator
from kerasops.models.inputs import InputSpec, model_input, require_inputs, vocabulary_size
from kerasops.models.layers import (
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
    require_attention_sizes,
)
from kerasops.models.text import CharTokenizer


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig(StrictConfig):
    """Character ids, position embedding, causal self-attention blocks, next-character logits.

    Args:
        inputs: filled from the dataset (text, language_modeling): the character vocabulary
            and the context length (`sequence_length`).
        embed_dim: model width (divisible by num_heads).
        num_heads: attention heads.
        ff_dim: feed-forward hidden width.
        num_layers: causal Transformer blocks.
        dropout: dropout inside blocks.
        max_new_tokens: characters the exported generation model appends to a prompt.
    """

    inputs: InputSpec | None = None
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    max_new_tokens: int = 120

    def validate(self) -> None:
        require_attention_sizes(self.embed_dim, self.num_heads, self.dropout)
        require(self.ff_dim > 0 and self.num_layers > 0, "ff_dim and num_layers must be > 0")
        require(1 <= self.max_new_tokens <= 10000, "max_new_tokens must be in 1..10000")


def build_language_model(config: LanguageModelConfig) -> keras.Model:
    """Return an uncompiled causal language model: strings (B,) -> logits (B, T, V).

    Position t's logits predict character t + 1 of the text; the layers `tokenize` (strings to
    ids) and `decoder` (ids to logits, a nested model) are what generation reuses.
    """
    spec = require_inputs(config.inputs, "language_model", ("text",))
    require(
        spec.task == "language_modeling",
        f"language_model trains on a language_modeling dataset (e.g. bbc_news_lm), "
        f"not a {spec.task} one",
    )
    ids = keras.Input(shape=(spec.sequence_length,), dtype="int32", name="ids")  # (B, T)
    x = TokenAndPositionEmbedding(
        vocabulary_size(spec), spec.sequence_length, config.embed_dim, name="embedding"
    )(ids)  # (B, T, C)
    for i in range(config.num_layers):
        x = TransformerEncoderBlock(
            config.embed_dim,
            config.num_heads,
            config.ff_dim,
            config.dropout,
            causal=True,
            name=f"block_{i}",
        )(x)  # (B, T, C), position t sees positions <= t only
    logits = keras.layers.Dense(vocabulary_size(spec), dtype="float32", name="logits")(x)
    decoder = keras.Model(ids, logits, name="decoder")  # (B, T) -> (B, T, V)

    text = model_input(spec)  # (B,) strings
    token_ids = CharTokenizer(spec.vocabulary, spec.sequence_length, name="tokenize")(text)
    return keras.Model(text, decoder(token_ids), name="language_model")


def build_text_generator(language_model: keras.Model, max_new_tokens: int) -> keras.Model:
    """The generation model: `prompt` strings (B,) -> `continuation` strings (B,), greedy."""
    prompt = keras.Input(shape=(), dtype="string", name="prompt")
    continuation = TextGenerator(language_model, max_new_tokens, name="continuation")(prompt)
    return keras.Model(prompt, continuation, name="text_generator")
