"""What the character-sequence families (language model, translator) share: token-level
cross-entropy, datasets of (inputs, target ids, weights), and their common recipe.

Their datasets hold raw text (x: context or source, y: the text one character later or the
translation); the model tokenizes its inputs itself, and the targets are tokenized here with the
model's own vocabulary, so training and serving read text the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasops.data import PreparedData, Split, make_tf_dataset
from kerasops.models.decoding import GreedyTranslator, TextGenerator
from kerasops.models.inputs import InputSpec
from kerasops.models.recipe import Recipe
from kerasops.models.text import END_TOKEN, CharTokenizer
from kerasops.models.training import (
    History,
    RunLog,
    TrainConfig,
    as_history,
    fit_verbosity,
    make_optimizer,
)


def texts(values: np.ndarray) -> list[str]:
    """Strings of a text split (bytes decoded as UTF-8)."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class SequenceRecipe(Recipe):
    """Token-level cross-entropy over character sequences, teacher-forced."""

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        return compile_sequence_model(model, train)

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: object,
        log: RunLog,
    ) -> History:
        return fit_sequence_model(model, prepared, train, callbacks)


def compile_sequence_model(model: keras.Model, train: TrainConfig) -> keras.Model:
    """Cross-entropy on logits over target ids, padding weighted out; token accuracy."""
    model.compile(
        optimizer=make_optimizer(train),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def label_tokenizer(model: keras.Model) -> CharTokenizer:
    """Targets to ids: the language model's own tokenizer; for a translator, the target
    tokenizer's vocabulary with `[END]` after the text instead of `[START]` before it."""
    if "tokenize_target" not in [layer.name for layer in model.layers]:
        return model.get_layer("tokenize")
    target = model.get_layer("tokenize_target")
    return CharTokenizer(target.vocabulary, target.sequence_length, end_token=END_TOKEN)


def sequence_dataset(
    model: keras.Model, split: Split, batch_size: int, shuffle: bool, seed: int = 0
) -> tf.data.Dataset:
    """Batches of (inputs, target ids (B, T), weights (B, T)); weights are 0 on padding."""
    labels = label_tokenizer(model)
    translating = "tokenize_target" in [layer.name for layer in model.layers]

    def with_targets(x, y):
        ids = labels(y)  # (B, T)
        inputs = {"source": x, "target": y} if translating else x
        return inputs, ids, tf.cast(ids != 0, "float32")

    dataset = make_tf_dataset(split, batch_size, shuffle, seed)
    return dataset.map(with_targets, num_parallel_calls=tf.data.AUTOTUNE)


def fit_sequence_model(
    model: keras.Model,
    prepared: PreparedData,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
) -> History:
    """Fit with teacher forcing on train, validating on val; return the history."""
    if train.epochs == 0:
        return {}
    history = model.fit(
        sequence_dataset(model, prepared.splits["train"], train.batch_size, True, train.seed),
        validation_data=sequence_dataset(model, prepared.splits["val"], train.batch_size, False),
        epochs=train.epochs,
        callbacks=list(callbacks),
        shuffle=False,  # the tf.data pipeline shuffles, with the run's seed
        verbose=fit_verbosity(),
    )
    return as_history(history)


def target_ids(model: keras.Model, split: Split, batch_size: int = 512) -> np.ndarray:
    """The target ids (N, T) of a split, as the model is trained on them."""
    dataset = sequence_dataset(model, split, batch_size, False).map(lambda x, ids, w: ids)
    return np.concatenate([batch.numpy() for batch in dataset])


def trained_model(model: keras.Model) -> keras.Model:
    """The trained model itself, also when given the text-in, text-out model wrapping it
    (what a run saves as model.keras and exports)."""
    for layer in model.layers:
        if isinstance(layer, TextGenerator):
            return layer.language_model
        if isinstance(layer, GreedyTranslator):
            return layer.translator
    return model
