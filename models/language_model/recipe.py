"""How the character language model trains: next-character cross-entropy; it is scored by
perplexity against a unigram model, and served as a text generator (prompt in, continuation
out)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasops.data import Manifest, PreparedData
from kerasops.models.evaluation import Evaluation
from kerasops.models.inputs import InputSpec
from kerasops.models.language_model.builder import LanguageModelConfig, build_text_generator
from kerasops.models.language_model.metrics import unigram_baseline
from kerasops.models.sequence import SequenceRecipe, sequence_dataset, target_ids, trained_model
from kerasops.models.sequence import texts as split_texts
from kerasops.models.text import character_vocabulary
from kerasops.models.training import TrainConfig


class LanguageModelRecipe(SequenceRecipe):
    """Teacher-forced next-character prediction over the dataset's windows."""

    tasks = ("language_modeling",)

    def wrong_task(self, manifest: Manifest) -> str:
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; the language model needs "
            "a language_modeling one (e.g. bbc_news_lm, or a text_corpus source)"
        )

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        """Characters of the training text (most frequent first, `max_tokens` ids in all) and
        the dataset's window as the context length."""
        split = prepared.splits["train"]
        vocabulary = character_vocabulary(split_texts(split.y), train.max_tokens)
        return InputSpec.from_dict(
            {
                "kind": "text",
                "task": "language_modeling",
                "shape": [],
                "num_outputs": len(vocabulary) + 2,
                "vocabulary": vocabulary,
                "sequence_length": int(prepared.manifest.stats["window"]),
            },
            prefix="inputs.",
        )

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        return evaluate_language_model(model, prepared, split)

    def serving_model(
        self, model: keras.Model, config: LanguageModelConfig | None, evaluation: Evaluation
    ) -> keras.Model:
        length = (config or LanguageModelConfig).max_new_tokens  # a model setting
        return build_text_generator(model, length)


def evaluate_language_model(
    model: keras.Model, prepared: PreparedData, split: str = "test", batch_size: int = 256
) -> Evaluation:
    """Perplexity, bits per character and next-character accuracy on `split`, against the
    unigram model of the training text. `model` may be the generation model wrapping it."""
    model = trained_model(model)
    nll = correct = count = 0.0
    for x, ids, weights in sequence_dataset(model, prepared.splits[split], batch_size, False):
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
        target_ids(model, prepared.splits[split]),
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
