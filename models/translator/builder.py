"""Encoder-decoder Transformer translating character sequences, and its greedy-decoding model."""

from __future__ import annotations

import dataclasses

import keras

from kerasops.config import StrictConfig, require
from kerasops.models.decoding import GreedyTranslator
from kerasops.models.inputs import InputSpec, require_inputs, vocabulary_size
from kerasops.models.layers import (
    DropMask,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    require_attention_sizes,
)
from kerasops.models.text import START_TOKEN, CharTokenizer, PaddingMask


@dataclasses.dataclass(frozen=True)
class TranslatorConfig(StrictConfig):
    """Source encoder (self-attention) and target decoder (causal self-attention and
    cross-attention), over one shared character vocabulary.

    Args:
        inputs: filled from the dataset (text, translation): the vocabulary (with `[START]`
            and `[END]`), the source length (`sequence_length`) and `target_length`.
        embed_dim: model width (divisible by num_heads).
        num_heads: attention heads.
        ff_dim: feed-forward hidden width.
        encoder_layers: encoder blocks.
        decoder_layers: decoder blocks.
        dropout: dropout inside blocks.
    """

    inputs: InputSpec | None = None
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1

    def validate(self) -> None:
        require_attention_sizes(self.embed_dim, self.num_heads, self.dropout)
        require(self.ff_dim > 0, "ff_dim must be > 0")
        require(
            self.encoder_layers > 0 and self.decoder_layers > 0,
            "encoder_layers and decoder_layers must be > 0",
        )


def _encoder(config: TranslatorConfig, spec: InputSpec) -> keras.Model:
    ids = keras.Input(shape=(spec.sequence_length,), dtype="int32", name="source_ids")  # (B, S)
    mask = PaddingMask(name="source_mask")(ids)  # (B, S)
    x = TokenAndPositionEmbedding(
        vocabulary_size(spec),
        spec.sequence_length,
        config.embed_dim,
        mask_zero=False,
        name="source_embedding",
    )(ids)  # (B, S, C)
    for i in range(config.encoder_layers):
        x = TransformerEncoderBlock(
            config.embed_dim, config.num_heads, config.ff_dim, config.dropout, name=f"encoder_{i}"
        )(x, mask=mask)  # (B, S, C), padding keys masked
    x = DropMask(name="states")(x)  # the decoder takes the padding mask explicitly
    return keras.Model(ids, x, name="encoder")


def _decoder(config: TranslatorConfig, spec: InputSpec) -> keras.Model:
    target_ids = keras.Input(shape=(spec.target_length,), dtype="int32", name="target_ids")
    context = keras.Input(shape=(spec.sequence_length, config.embed_dim), name="context")
    source_ids = keras.Input(shape=(spec.sequence_length,), dtype="int32", name="source_ids")
    source_mask = PaddingMask(name="source_mask")(source_ids)  # (B, S)
    x = TokenAndPositionEmbedding(
        vocabulary_size(spec),
        spec.target_length,
        config.embed_dim,
        mask_zero=False,
        name="target_embedding",
    )(target_ids)  # (B, T, C); causal attention keeps trailing padding out of view
    for i in range(config.decoder_layers):
        x = TransformerDecoderBlock(
            config.embed_dim, config.num_heads, config.ff_dim, config.dropout, name=f"decoder_{i}"
        )(x, context, context_mask=source_mask)  # (B, T, C)
    logits = keras.layers.Dense(vocabulary_size(spec), dtype="float32", name="logits")(x)
    return keras.Model([target_ids, context, source_ids], logits, name="decoder")


def build_translator(config: TranslatorConfig) -> keras.Model:
    """Return an uncompiled translator for teacher forcing:
    {source (B,), target (B,)} strings -> logits (B, T, V).

    The target input is the reference translation; the decoder sees `[START]` and its first
    T - 1 characters, and position t's logits predict character t + 1 (or `[END]`).
    """
    spec = require_inputs(config.inputs, "translator", ("text",))
    require(
        spec.task == "translation",
        f"translator trains on a translation dataset (e.g. dates), not a {spec.task} one",
    )
    require(spec.target_length >= 2, "inputs.target_length must be at least 2")
    source = keras.Input(shape=(), dtype="string", name="source")
    target = keras.Input(shape=(), dtype="string", name="target")
    source_ids = CharTokenizer(spec.vocabulary, spec.sequence_length, name="tokenize_source")(
        source
    )  # (B, S)
    target_ids = CharTokenizer(
        spec.vocabulary, spec.target_length, start_token=START_TOKEN, name="tokenize_target"
    )(target)  # (B, T): [START] then the target's characters
    context = _encoder(config, spec)(source_ids)  # (B, S, C)
    logits = _decoder(config, spec)([target_ids, context, source_ids])  # (B, T, V)
    return keras.Model({"source": source, "target": target}, logits, name="translator")


def build_greedy_translator(translator: keras.Model) -> keras.Model:
    """The serving model: `source` strings (B,) -> `translation` strings (B,), greedy."""
    source = keras.Input(shape=(), dtype="string", name="source")
    translation = GreedyTranslator(translator, name="translation")(source)
    return keras.Model(source, translation, name="greedy_translator")
