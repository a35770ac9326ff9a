"""Character tokenization as layers, shared by the language model and the translator.

Token ids: 0 pads, 1 is out-of-vocabulary, then the vocabulary in order (id = index + 2). Special
tokens such as `[START]` and `[END]` are vocabulary entries that no text splits into, since text
is split into single characters. The layers use TensorFlow string ops: kerasops runs Keras on
the TensorFlow backend, and these layers are what makes an exported SavedModel take raw text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

import keras
import tensorflow as tf

PAD_ID = 0
OOV_ID = 1
OOV_TOKEN = "[UNK]"
START_TOKEN = "[START]"
END_TOKEN = "[END]"


def character_vocabulary(
    texts: Iterable[str], max_tokens: int, specials: Sequence[str] = ()
) -> list[str]:
    """The characters of `texts`, most frequent first (ties in code-point order), after the
    `specials`; at most `max_tokens` ids in all, counting padding and out-of-vocabulary."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    room = max(max_tokens - 2 - len(specials), 0)
    return [*specials, *ranked[:room]]


def token_id(vocabulary: Sequence[str], token: str) -> int:
    """The id of `token` in a tokenizer built on `vocabulary`."""
    return list(vocabulary).index(token) + 2


@keras.saving.register_keras_serializable(package="kerasops")
class CharTokenizer(keras.layers.Layer):
    """Strings (B,) to character ids (B, sequence_length), padded with 0.

    Args:
        vocabulary: characters (and special tokens); id = index + 2.
        sequence_length: ids per example, special tokens included.
        start_token: a vocabulary entry put before the text (decoder input).
        end_token: a vocabulary entry put after the text (decoder target).
        keep: on overflow keep the `first` or the `last` characters (a prompt keeps its end).
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        sequence_length: int,
        start_token: str | None = None,
        end_token: str | None = None,
        keep: Literal["first", "last"] = "first",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.sequence_length = sequence_length
        self.start_token = start_token
        self.end_token = end_token
        self.keep = keep
        if self._room() < 1:
            raise ValueError(f"sequence_length {sequence_length} leaves no room for text")
        self.lookup = keras.layers.StringLookup(
            vocabulary=self.vocabulary,
            mask_token="",
            oov_token=OOV_TOKEN,
            num_oov_indices=1,
            output_mode="int",
            name="lookup",
        )

    def build(self, input_shape):
        super().build(input_shape)  # the lookup table is filled at construction; no weights

    def call(self, texts):
        chars = tf.strings.unicode_split(texts, "UTF-8", errors="replace")  # (B, None) ragged
        ids = tf.cast(tf.ragged.map_flat_values(self.lookup, chars), "int32")  # (B, None)
        ids = ids[:, : self._room()] if self.keep == "first" else ids[:, -self._room() :]
        batch = tf.shape(texts)[0]
        if self.start_token is not None:
            start = tf.fill([batch, 1], token_id(self.vocabulary, self.start_token))  # (B, 1)
            ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
        if self.end_token is not None:
            end = tf.fill([batch, 1], token_id(self.vocabulary, self.end_token))  # (B, 1)
            ids = tf.concat([ids, tf.RaggedTensor.from_tensor(end)], axis=1)
        return ids.to_tensor(default_value=PAD_ID, shape=[None, self.sequence_length])  # (B, T)

    def _room(self) -> int:
        """Characters that fit beside the special tokens."""
        specials = (self.start_token is not None) + (self.end_token is not None)
        return self.sequence_length - specials

    def compute_output_spec(self, texts):
        return keras.KerasTensor((texts.shape[0], self.sequence_length), dtype="int32")

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "sequence_length": self.sequence_length,
            "start_token": self.start_token,
            "end_token": self.end_token,
            "keep": self.keep,
        }


def ids_to_text(ids: tf.Tensor, vocabulary: Sequence[str], stop_id: int | None = None) -> tf.Tensor:
    """Ids (B, N) back to strings (B,): padding, out-of-vocabulary and special tokens (entries
    longer than one character) drop out; with `stop_id`, everything from its first occurrence on.
    """
    pieces = ["", "", *(t if len(t) == 1 else "" for t in vocabulary)]
    table = tf.constant(pieces, dtype=tf.string)  # (V,)
    chars = tf.gather(table, ids)  # (B, N)
    if stop_id is not None:
        stopped = tf.cumsum(tf.cast(tf.equal(ids, stop_id), "int32"), axis=1) > 0  # (B, N)
        chars = tf.where(stopped, tf.constant("", dtype=tf.string), chars)
    return tf.strings.reduce_join(chars, axis=1)  # (B,)


@keras.saving.register_keras_serializable(package="kerasops")
class PaddingMask(keras.layers.Layer):
    """Token ids (B, T) to a boolean mask (B, T), true where the id is not padding."""

    def call(self, ids):
        return tf.not_equal(ids, PAD_ID)

    def compute_output_spec(self, ids):
        return keras.KerasTensor(ids.shape, dtype="bool")
