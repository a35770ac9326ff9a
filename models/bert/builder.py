"""BERT-style encoder: pretrained by masked language modelling, then fine-tuned as a classifier.

Three models share one encoder (token ids -> contextual states):

* the pretrainer: masked token ids and the positions to predict -> logits over the vocabulary at
  those positions (what masked-language-model training fits);
* the text encoder (the backbone a pretraining run saves and serves): raw text -> the vectorizer
  -> the encoder -> a masked mean over real tokens, `embedding` (B, C);
* the classifier: raw text -> that backbone's vectorizer and encoder (pretrained, or fresh with
  `backbone: none` for the from-scratch comparison) -> pooling -> softmax.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
from keras import ops

from kerasops.config import StrictConfig, require
from kerasops.errors import ConfigError
from kerasops.models.inputs import (
    InputSpec,
    classification_head,
    model_input,
    require_inputs,
    vocabulary_size,
)
from kerasops.models.layers import (
    MaskedMeanPooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
    require_attention_sizes,
)

ENCODER_LAYER = "encoder"
VECTORIZER_LAYER = "vectorize"


@dataclasses.dataclass(frozen=True)
class BertMaskedLMConfig(StrictConfig):
    """An encoder pretrained to recover masked tokens.

    Args:
        inputs: filled from the dataset (text; labels are not used).
        embed_dim: model width (divisible by num_heads).
        num_heads: attention heads.
        ff_dim: feed-forward hidden width.
        num_layers: encoder blocks.
        dropout: dropout inside blocks.
        mask_rate: share of each text's tokens chosen for prediction (BERT: 0.15); of those,
            80 % become the mask token, 10 % a random token, 10 % stay as they are.
        windows_per_text: pretraining reads each text as up to this many consecutive windows
            of `sequence_length` tokens (empty windows dropped), so long documents teach more
            than their first window.
    """

    inputs: InputSpec | None = None
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    mask_rate: float = 0.15
    windows_per_text: int = 4

    def validate(self) -> None:
        require_attention_sizes(self.embed_dim, self.num_heads, self.dropout)
        require(self.ff_dim > 0 and self.num_layers > 0, "ff_dim and num_layers must be > 0")
        require(0 < self.mask_rate < 1, "mask_rate must be in (0, 1)")
        require(self.windows_per_text >= 1, "windows_per_text must be >= 1")

    @property
    def predictions_per_text(self) -> int:
        """Positions predicted per text at most (BERT's max_predictions_per_seq)."""
        length = self.inputs.sequence_length if self.inputs else 1
        return max(1, round(length * self.mask_rate))


@dataclasses.dataclass(frozen=True)
class BertClassifierConfig(StrictConfig):
    """A text classifier on a pretrained encoder, trained frozen then fine-tuned.

    Args:
        inputs: filled from the dataset (text classification).
        backbone: a pretraining run folder (`artifacts/runs/bert_masked_lm-<dataset>`) or its
            `model.keras`; `none` builds the same architecture untrained (the from-scratch
            baseline), sized by the keys below.
        embed_dim, num_heads, ff_dim, num_layers: the encoder's size with `backbone: none`.
        dropout: dropout before the head (and inside fresh encoder blocks).
        fine_tune_epochs: phase 2, the encoder unfrozen (0: the head alone is trained).
        fine_tune_learning_rate: phase 2's learning rate (phase 1 uses `train.learning_rate`).
        train_examples: train on this many labelled training texts, stratified by class under
            the run's seed (0: all); the label budget of a fine-tune against scratch comparison.
        windows_per_text: the classifier reads each text as up to this many consecutive
            windows of the encoder's sequence length (the backbone's, or `sequence_length`
            with `backbone: none`), encodes each and pools over all their real tokens: an
            encoder pretrained on short windows still reads the whole article.
    """

    inputs: InputSpec | None = None
    backbone: str = "none"
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 1e-4
    train_examples: int = 0
    windows_per_text: int = 4

    def validate(self) -> None:
        require_attention_sizes(self.embed_dim, self.num_heads, self.dropout)
        require(self.ff_dim > 0 and self.num_layers > 0, "ff_dim and num_layers must be > 0")
        require(self.windows_per_text >= 1, "windows_per_text must be >= 1")
        require(self.backbone.strip() != "", "backbone must be none or a pretraining run's path")
        require(self.fine_tune_epochs >= 0, "fine_tune_epochs must be >= 0")
        require(self.fine_tune_learning_rate > 0, "fine_tune_learning_rate must be positive")
        require(self.train_examples >= 0, "train_examples must be >= 0 (0: all)")

    @property
    def pretrained(self) -> bool:
        return self.backbone.strip().lower() != "none"


def mask_token_id(spec: InputSpec) -> int:
    """The id of the mask token: one past the vectorizer's ids (0 pads, 1 is unknown)."""
    return vocabulary_size(spec)


def build_encoder(
    spec: InputSpec, embed_dim: int, num_heads: int, ff_dim: int, layers: int, dropout: float
) -> keras.Model:
    """Token ids (B, T) -> contextual states (B, T, C); id 0 is padding and attended past."""
    token_ids = keras.Input(shape=(spec.sequence_length,), dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(
        vocabulary_size(spec) + 1, spec.sequence_length, embed_dim, name="embedding"
    )(token_ids)  # (B, T, C); the extra id is the mask token
    for i in range(layers):
        x = TransformerEncoderBlock(embed_dim, num_heads, ff_dim, dropout, name=f"block_{i}")(x)
    return keras.Model(token_ids, x, name=ENCODER_LAYER)


def build_bert_masked_lm(config: BertMaskedLMConfig) -> keras.Model:
    """Return the uncompiled pretrainer: {token_ids (B, T), positions (B, P)} -> logits
    (B, P, V) over the vectorizer's ids at the positions to predict."""
    spec = require_inputs(config.inputs, "bert_masked_lm", ("text",))
    encoder = build_encoder(
        spec, config.embed_dim, config.num_heads, config.ff_dim, config.num_layers, config.dropout
    )
    token_ids = keras.Input(shape=(spec.sequence_length,), dtype="int32", name="token_ids")
    positions = keras.Input(shape=(config.predictions_per_text,), dtype="int32", name="positions")
    states = encoder(token_ids)  # (B, T, C)
    picked = ops.take_along_axis(states, ops.expand_dims(positions, -1), axis=1)  # (B, P, C)
    hidden = keras.layers.Dense(config.embed_dim, activation="gelu", name="mlm_transform")(picked)
    hidden = keras.layers.LayerNormalization(epsilon=1e-6, name="mlm_norm")(hidden)
    logits = keras.layers.Dense(vocabulary_size(spec), dtype="float32", name="mlm_logits")(hidden)
    return keras.Model({"token_ids": token_ids, "positions": positions}, logits, name="bert_mlm")


@keras.saving.register_keras_serializable(package="kerasops")
class TextEncoding(keras.layers.Layer):
    """Raw text (B,) -> (B, C): the pretrainer's vocabulary, its encoder, a mean over the real
    tokens. Holds the whole pretrainer, so a saved text encoder can still be scored on masked
    tokens and fine-tuned from.

    Args:
        pretrainer: a model built by `build_bert_masked_lm` (layers `encoder`, `mlm_logits`).
        vocabulary: the vectorizer's words, most frequent first (ids from 2).
        sequence_length: tokens kept per text.
    """

    def __init__(self, pretrainer: keras.Model, vocabulary, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.pretrainer = pretrainer
        self.vocabulary = list(vocabulary)
        self.sequence_length = sequence_length
        self.vectorizer = keras.layers.TextVectorization(
            vocabulary=self.vocabulary,
            output_mode="int",
            output_sequence_length=sequence_length,
            name=VECTORIZER_LAYER,
        )

    def build(self, input_shape):
        self.vectorizer.build(input_shape)
        super().build(input_shape)

    def call(self, text):
        token_ids = self.vectorizer(text)  # (B, T)
        states = self.pretrainer.get_layer(ENCODER_LAYER)(token_ids, training=False)  # (B, T, C)
        real = ops.expand_dims(ops.cast(ops.not_equal(token_ids, 0), states.dtype), -1)
        total = ops.sum(states * real, axis=1)  # (B, C)
        return total / ops.maximum(ops.sum(real, axis=1), 1.0)  # an empty text pools to zeros

    def compute_output_spec(self, text):
        width = self.pretrainer.get_layer(ENCODER_LAYER).output.shape[-1]
        return keras.KerasTensor((text.shape[0], width), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "pretrainer": keras.saving.serialize_keras_object(self.pretrainer),
            "vocabulary": self.vocabulary,
            "sequence_length": self.sequence_length,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["pretrainer"] = keras.saving.deserialize_keras_object(config["pretrainer"])
        return cls(**config)


def build_text_encoder(spec: InputSpec, pretrainer: keras.Model) -> keras.Model:
    """The served text encoder: `text` strings (B,) -> `embedding` (B, C)."""
    text = model_input(spec)
    encoding = TextEncoding(pretrainer, spec.vocabulary, spec.sequence_length, name="embedding")
    return keras.Model(text, encoding(text), name="bert_text_encoder")


def text_encoding_of(model: keras.Model) -> TextEncoding | None:
    """The TextEncoding layer of a saved text encoder, or None."""
    return next((layer for layer in model.layers if isinstance(layer, TextEncoding)), None)


def load_backbone(path: str) -> TextEncoding:
    """The text encoding a pretraining run saved: `path` is its run folder or its model.keras.
    Raises ConfigError when there is none, or it is not a BERT text encoder."""
    file = Path(path).expanduser()
    file = file / "model.keras" if file.is_dir() else file
    if not file.is_file():
        raise ConfigError(
            f"backbone {path!r}: no model.keras there; train one first "
            "(kerasops train bert_masked_lm --dataset <text dataset>) and give its run folder"
        )
    encoding = text_encoding_of(keras.saving.load_model(file, compile=False))
    if encoding is None:
        raise ConfigError(f"backbone {path!r} is not a bert_masked_lm text encoder")
    return encoding


def build_bert_classifier(config: BertClassifierConfig) -> keras.Model:
    """Return the uncompiled classifier, its encoder frozen when it is pretrained (phase 1)."""
    spec = require_inputs(config.inputs, "bert_classifier", ("text",))
    require(spec.task == "classification", "bert_classifier is a classifier")
    if config.pretrained:
        backbone = load_backbone(config.backbone)
        vocabulary = backbone.vocabulary  # the pretraining vocabulary, not this dataset's
        length = backbone.sequence_length  # the encoder's position embeddings
        encoder = backbone.pretrainer.get_layer(ENCODER_LAYER)
        encoder.trainable = False
    else:
        vocabulary, length = spec.vocabulary, spec.sequence_length
        encoder = build_encoder(
            spec,
            config.embed_dim,
            config.num_heads,
            config.ff_dim,
            config.num_layers,
            config.dropout,
        )
    windows = config.windows_per_text
    vectorizer = keras.layers.TextVectorization(  # as text_vectorizer, W windows long
        vocabulary=list(vocabulary),
        output_mode="int",
        output_sequence_length=length * windows,
        name=VECTORIZER_LAYER,
    )
    text = model_input(spec)
    token_ids = vectorizer(text)  # (B, W * T)
    states = encoder(ops.reshape(token_ids, (-1, length)))  # (B * W, T, C), a window a row
    states = ops.reshape(states, (-1, windows * length, states.shape[-1]))  # (B, W * T, C)
    pooled = MaskedMeanPooling(name="pool")(states, mask=ops.not_equal(token_ids, 0))  # (B, C)
    # the mean of a frozen encoder's states varies little from text to text: normalized, the
    # head on it learns at the usual learning rate (without it phase 1 barely moved)
    pooled = keras.layers.LayerNormalization(epsilon=1e-6, name="pool_norm")(pooled)
    x = keras.layers.Dropout(config.dropout, name="dropout")(pooled)
    return keras.Model(text, classification_head(x, spec), name="bert_classifier")
