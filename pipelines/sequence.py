"""Training steps of the sequence models: the character language model and the translator.

Their datasets hold raw text (x: context or source, y: the text one character later or the
translation); the model tokenizes its inputs itself, and the targets are tokenized here with the
model's own vocabulary, so training and serving read text the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from data import PreparedData, Split, make_tf_dataset
from models import InputSpec
from models.config import require
from models.text import END_TOKEN, START_TOKEN, CharTokenizer, character_vocabulary
from pipelines.evaluate import Evaluation
from pipelines.sequence_metrics import translation_scores, unigram_baseline
from pipelines.settings import TrainConfig


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def language_model_spec(prepared: PreparedData, train: TrainConfig) -> InputSpec:
    """Characters of the training text (most frequent first, `max_tokens` ids in all) and the
    dataset's window as the context length."""
    manifest = prepared.manifest
    require(
        manifest.task == "language_modeling",
        f"dataset {manifest.name!r} is a {manifest.task} dataset; the language model needs a "
        "language_modeling one (e.g. bbc_news_lm, or a text_corpus source)",
    )
    split = prepared.splits["train"]
    vocabulary = character_vocabulary(_texts(split.y), train.max_tokens)
    return InputSpec.from_dict(
        {
            "kind": "text",
            "task": "language_modeling",
            "shape": [],
            "num_outputs": len(vocabulary) + 2,
            "vocabulary": vocabulary,
            "sequence_length": int(manifest.stats["window"]),
        },
        prefix="inputs.",
    )


def translation_spec(prepared: PreparedData, train: TrainConfig) -> InputSpec:
    """One character vocabulary for sources and targets (after `[START]` and `[END]`), the
    longest training source as the source length and the longest target + 1 as the target's."""
    manifest = prepared.manifest
    require(
        manifest.task == "translation",
        f"dataset {manifest.name!r} is a {manifest.task} dataset; the translator needs a "
        "translation one (e.g. dates, or a translation_csv source)",
    )
    split = prepared.splits["train"]
    texts = [*_texts(split.x), *_texts(split.y)]
    vocabulary = character_vocabulary(texts, train.max_tokens, (START_TOKEN, END_TOKEN))
    return InputSpec.from_dict(
        {
            "kind": "text",
            "task": "translation",
            "shape": [],
            "num_outputs": len(vocabulary) + 2,
            "vocabulary": vocabulary,
            "sequence_length": int(manifest.stats["source_characters_max"]),
            "target_length": int(manifest.stats["target_characters_max"]) + 1,
        },
        prefix="inputs.",
    )


def compile_sequence_model(model: keras.Model, train: TrainConfig) -> keras.Model:
    """Cross-entropy on logits over target ids, padding weighted out; token accuracy."""
    from pipelines.train import make_optimizer

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
) -> dict[str, list[float]]:
    """Fit with teacher forcing on train, validating on val; return the history."""
    if train.epochs == 0:
        return {}
    history = model.fit(
        sequence_dataset(model, prepared.splits["train"], train.batch_size, True, train.seed),
        validation_data=sequence_dataset(model, prepared.splits["val"], train.batch_size, False),
        epochs=train.epochs,
        callbacks=list(callbacks),
        verbose=2,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def target_ids(model: keras.Model, split: Split, batch_size: int = 512) -> np.ndarray:
    """The target ids (N, T) of a split, as the model is trained on them."""
    dataset = sequence_dataset(model, split, batch_size, False).map(lambda x, ids, w: ids)
    return np.concatenate([batch.numpy() for batch in dataset])


def trained_model(model: keras.Model) -> keras.Model:
    """The trained model itself, also when given the text-in, text-out model wrapping it
    (what a run saves as model.keras and exports)."""
    from models.decoding import GreedyTranslator, TextGenerator

    for layer in model.layers:
        if isinstance(layer, TextGenerator):
            return layer.language_model
        if isinstance(layer, GreedyTranslator):
            return layer.translator
    return model


def evaluate_language_model(
    model: keras.Model, prepared: PreparedData, batch_size: int = 256
) -> Evaluation:
    """Test perplexity, bits per character and next-character accuracy, against the unigram
    model of the training text. `model` may be the generation model wrapping it."""
    model = trained_model(model)
    nll = correct = count = 0.0
    for x, ids, weights in sequence_dataset(model, prepared.splits["test"], batch_size, False):
        logits = model(x, training=False)  # (B, T, V); per process, whatever the strategy
        log_p = tf.nn.log_softmax(logits, axis=-1)  # (B, T, V)
        picked = tf.gather(log_p, ids, batch_dims=2).numpy()  # (B, T)
        w = weights.numpy()
        nll -= float((picked * w).sum())
        correct += float(((np.argmax(logits, axis=-1) == ids.numpy()) * w).sum())
        count += float(w.sum())
    mean_nll = nll / max(count, 1.0)
    vocabulary = len(model.get_layer("tokenize").vocabulary) + 2
    baseline = unigram_baseline(
        target_ids(model, prepared.splits["train"]),
        target_ids(model, prepared.splits["test"]),
        vocabulary,
    )
    return Evaluation(
        metrics={
            "test_perplexity": float(np.exp(mean_nll)),
            "test_bits_per_character": float(mean_nll / np.log(2.0)),
            "test_accuracy": correct / max(count, 1.0),
            **baseline,
        }
    )


def translate(model: keras.Model, sources: Sequence[str], batch_size: int = 256) -> list[str]:
    """Greedy translations of `sources` by a translator built by `build_translator`."""
    from models.translation import build_greedy_translator

    greedy = build_greedy_translator(model)
    outputs = greedy.predict(np.asarray(sources, dtype=object), batch_size=batch_size, verbose=0)
    return _texts(np.asarray(outputs).reshape(-1))


def evaluate_translator(model: keras.Model, prepared: PreparedData) -> Evaluation:
    """Exact match and character BLEU of greedy translations of the test sources, against
    copying each source unchanged. `model` may be the greedy translator wrapping it."""
    model = trained_model(model)
    test = prepared.splits["test"]
    sources, references = _texts(test.x), _texts(test.y)
    return Evaluation(metrics=translation_scores(sources, references, translate(model, sources)))
