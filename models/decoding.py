"""Greedy decoding as layers: what turns a trained language model or translator into a model
that takes a string and returns a string, so its SavedModel serves text in and text out.

Each layer wraps the whole trained model (it is saved inside, and can be scored or trained
further) and decodes in a `tf.while_loop`, so an export holds one bounded loop, not an unrolled
graph. Decoding is greedy (argmax) and never emits padding, out-of-vocabulary or start ids.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasops.models.text import (
    END_TOKEN,
    OOV_ID,
    PAD_ID,
    START_TOKEN,
    CharTokenizer,
    ids_to_text,
    token_id,
)


def _banned(vocabulary_size: int, ids: list[int]) -> tf.Tensor:
    """(V,) additive logits: a large negative number at `ids`, 0 elsewhere."""
    banned = tf.reduce_sum(tf.one_hot(ids, vocabulary_size), axis=0)  # (V,)
    return banned * -1e9


@keras.saving.register_keras_serializable(package="kerasops")
class TextGenerator(keras.layers.Layer):
    """Prompts (B,) to greedy continuations (B,) of `max_new_tokens` characters.

    The model sees at most its context length of characters (the prompt's end, then what it
    generated); an empty prompt starts from a space.

    Args:
        language_model: a model built by `build_language_model` (layers `tokenize`, `decoder`).
        max_new_tokens: characters generated per prompt.
    """

    def __init__(self, language_model: keras.Model, max_new_tokens: int, **kwargs):
        super().__init__(**kwargs)
        self.language_model = language_model
        self.max_new_tokens = max_new_tokens
        tokenizer = language_model.get_layer("tokenize")
        self.vocabulary = list(tokenizer.vocabulary)
        self.context_length = tokenizer.sequence_length
        self.prompt_tokenizer = CharTokenizer(
            self.vocabulary, self.context_length, keep="last", name="tokenize_prompt"
        )

    def build(self, input_shape):
        self.prompt_tokenizer.build(input_shape)
        super().build(input_shape)

    def call(self, prompts):
        decoder = self.language_model.get_layer("decoder")
        context, new = self.context_length, self.max_new_tokens
        prompts = tf.where(tf.strings.length(prompts) > 0, prompts, " ")
        ids = self.prompt_tokenizer(prompts)  # (B, T)
        prompt_lengths = tf.reduce_sum(tf.cast(ids != PAD_ID, "int32"), axis=1)  # (B,)
        batch = tf.shape(ids)[0]
        buffer = tf.concat([ids, tf.zeros([batch, new], "int32")], axis=1)  # (B, T + N)
        banned = _banned(len(self.vocabulary) + 2, [PAD_ID, OOV_ID])  # (V,)
        rows = tf.range(batch)

        def step(i, buffer, lengths):
            start = tf.maximum(lengths - context, 0)  # (B,)
            positions = start[:, None] + tf.range(context)[None, :]  # (B, T)
            window = tf.gather(buffer, positions, batch_dims=1)  # (B, T)
            logits = decoder(window, training=False)  # (B, T, V)
            last = tf.gather(logits, tf.minimum(lengths, context) - 1, batch_dims=1)  # (B, V)
            next_ids = tf.argmax(last + banned, axis=-1, output_type="int32")  # (B,)
            buffer = tf.tensor_scatter_nd_update(
                buffer, tf.stack([rows, lengths], axis=1), next_ids
            )
            return i + 1, buffer, lengths + 1

        _, buffer, _ = tf.while_loop(
            lambda i, *_: i < new, step, (tf.constant(0), buffer, prompt_lengths)
        )
        positions = prompt_lengths[:, None] + tf.range(new)[None, :]  # (B, N)
        return ids_to_text(tf.gather(buffer, positions, batch_dims=1), self.vocabulary)  # (B,)

    def compute_output_spec(self, prompts):
        return keras.KerasTensor((prompts.shape[0],), dtype="string")

    def get_config(self):
        return {
            **super().get_config(),
            "language_model": keras.saving.serialize_keras_object(self.language_model),
            "max_new_tokens": self.max_new_tokens,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["language_model"] = keras.saving.deserialize_keras_object(config["language_model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasops")
class GreedyTranslator(keras.layers.Layer):
    """Sources (B,) to greedy translations (B,): encode once, then decode one character at a
    time until `[END]` or the target length.

    Args:
        translator: a model built by `build_translator` (layers `tokenize_source`,
            `tokenize_target`, `encoder`, `decoder`).
    """

    def __init__(self, translator: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.translator = translator
        target_tokenizer = translator.get_layer("tokenize_target")
        self.vocabulary = list(target_tokenizer.vocabulary)
        self.target_length = target_tokenizer.sequence_length

    def build(self, input_shape):
        super().build(input_shape)  # the wrapped translator is built already

    def call(self, sources):
        source_ids = self.translator.get_layer("tokenize_source")(sources)  # (B, S)
        context = self.translator.get_layer("encoder")(source_ids, training=False)  # (B, S, C)
        decoder = self.translator.get_layer("decoder")
        batch, length = tf.shape(source_ids)[0], self.target_length
        start = tf.fill([batch, 1], token_id(self.vocabulary, START_TOKEN))  # (B, 1)
        tokens = tf.concat([start, tf.zeros([batch, length - 1], "int32")], axis=1)  # (B, T)
        start_id = token_id(self.vocabulary, START_TOKEN)
        banned = _banned(len(self.vocabulary) + 2, [PAD_ID, OOV_ID, start_id])  # (V,)
        rows = tf.range(batch)

        def step(i, tokens):
            logits = decoder([tokens, context, source_ids], training=False)  # (B, T, V)
            next_ids = tf.argmax(logits[:, i] + banned, axis=-1, output_type="int32")  # (B,)
            at = tf.stack([rows, tf.fill([batch], i + 1)], axis=1)  # (B, 2)
            return i + 1, tf.tensor_scatter_nd_update(tokens, at, next_ids)

        _, tokens = tf.while_loop(lambda i, _: i < length - 1, step, (tf.constant(0), tokens))
        end_id = token_id(self.vocabulary, END_TOKEN)
        return ids_to_text(tokens[:, 1:], self.vocabulary, stop_id=end_id)  # (B,)

    def compute_output_spec(self, sources):
        return keras.KerasTensor((sources.shape[0],), dtype="string")

    def get_config(self):
        return {
            **super().get_config(),
            "translator": keras.saving.serialize_keras_object(self.translator),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["translator"] = keras.saving.deserialize_keras_object(config["translator"])
        return cls(**config)
