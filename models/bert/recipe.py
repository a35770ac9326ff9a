"""How the BERT-style families train.

`BertMaskedLMRecipe` pretrains the encoder on a text dataset's texts (labels unused): dynamic
masking (new masks every epoch), cross-entropy at the chosen positions; scored by masked-token
accuracy against always guessing the training text's most frequent token; served (and handed to
fine-tuning) as the text encoder.

`BertClassifierRecipe` fine-tunes: phase 1 trains the head on the frozen pretrained encoder,
phase 2 unfreezes it at `fine_tune_learning_rate`. With `backbone: none` the same two phases
train a fresh encoder, the from-scratch comparison.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasops.data import Manifest, PreparedData, Split, make_tf_dataset
from kerasops.errors import KerasopsError
from kerasops.models.bert.builder import (
    ENCODER_LAYER,
    BertClassifierConfig,
    BertMaskedLMConfig,
    build_text_encoder,
    mask_token_id,
    text_encoding_of,
)
from kerasops.models.bert.masking import mask_tokens
from kerasops.models.evaluation import Evaluation
from kerasops.models.inputs import InputSpec, vocabulary_size
from kerasops.models.recipe import Recipe
from kerasops.models.training import (
    History,
    RunLog,
    TrainConfig,
    as_history,
    compile_model,
    fit_phase,
    fit_verbosity,
    make_optimizer,
)


class BertMaskedLMRecipe(Recipe):
    """Masked-language-model pretraining of the encoder."""

    tasks = ("classification",)

    def wrong_task(self, manifest: Manifest) -> str:
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; bert_masked_lm pretrains "
            "on the texts of a text classification dataset (e.g. bbc_news; labels are unused)"
        )

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        model.compile(
            optimizer=make_optimizer(train),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=train.jit_compile,
        )
        return model

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: BertMaskedLMConfig,
        log: RunLog,
    ) -> History:
        if train.epochs == 0:
            return {}
        splits, batch = prepared.splits, train.batch_size
        history = model.fit(
            masked_dataset(splits["train"], config, batch, train.seed, dynamic=True),
            validation_data=masked_dataset(splits["val"], config, batch, train.seed),
            epochs=train.epochs,
            callbacks=list(callbacks),
            shuffle=False,  # the tf.data pipeline shuffles, with the run's seed
            verbose=fit_verbosity(),
        )
        return as_history(history)

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        encoding = text_encoding_of(model)  # the saved text encoder holds the pretrainer
        pretrainer = encoding.pretrainer if encoding is not None else model
        if "mlm_logits" not in [layer.name for layer in pretrainer.layers]:
            raise KerasopsError("bert_masked_lm: this model has no masked-token head to score")
        return evaluate_masked_lm(pretrainer, prepared, config, split)

    def serving_model(
        self, model: keras.Model, config: BertMaskedLMConfig, evaluation: Evaluation
    ) -> keras.Model:
        return build_text_encoder(config.inputs, model)


def masked_dataset(
    split: Split, config: BertMaskedLMConfig, batch_size: int, seed: int, dynamic: bool = False
) -> tf.data.Dataset:
    """Batches of ({token_ids, positions}, targets, weights) from the windows of a split's
    texts; `dynamic` shuffles and draws new masks every epoch, otherwise every pass is alike
    (validation, test)."""
    spec = config.inputs
    length, windows = spec.sequence_length, config.windows_per_text
    vectorize = keras.layers.TextVectorization(
        vocabulary=list(spec.vocabulary), output_sequence_length=length * windows
    )

    def cut(text):
        ids = tf.reshape(vectorize(text), [-1, length])  # (B * W, T)
        return tf.data.Dataset.from_tensor_slices(ids)

    texts = make_tf_dataset(split, 256, False).map(lambda x, y: x)
    ids = texts.flat_map(cut).filter(lambda row: tf.reduce_any(row > 0))  # (T,) windows
    count = int(ids.reduce(0, lambda n, _: n + 1))  # one cheap pass: fit knows its steps
    ids = ids.apply(tf.data.experimental.assert_cardinality(count))
    if dynamic:
        ids = ids.shuffle(16 * batch_size, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=dynamic).batch(2)

    def masked(batch, pair):
        return mask_tokens(
            batch,
            config.predictions_per_text,
            config.mask_rate,
            mask_token_id(spec),
            vocabulary_size(spec),
            pair,
        )

    batches = tf.data.Dataset.zip(ids.batch(batch_size), seeds)
    return batches.map(masked).prefetch(tf.data.AUTOTUNE)


def evaluate_masked_lm(
    model: keras.Model, prepared: PreparedData, config: BertMaskedLMConfig, split: str
) -> Evaluation:
    """Masked-token accuracy and perplexity on `split` (its masks fixed by seed 0), against the
    context-free guess: the training split's word frequencies (add-one smoothed), whose best
    answer is always its most frequent word."""
    counts = np.ones(vocabulary_size(config.inputs), dtype="float64")
    for _, targets, weights in masked_dataset(prepared.splits["train"], config, 256, 0):
        np.add.at(counts, targets.numpy()[weights.numpy() > 0], 1)
    unigram = np.log(counts / counts.sum())
    most_frequent = int(np.argmax(counts))
    nll = unigram_nll = correct = guessed = count = 0.0
    for inputs, targets, weights in masked_dataset(prepared.splits[split], config, 256, 0):
        logits = model(inputs, training=False)  # (B, P, V)
        log_p = tf.nn.log_softmax(logits, axis=-1)
        picked = tf.gather(log_p, targets, batch_dims=2).numpy()  # (B, P)
        w, ids = weights.numpy(), targets.numpy()
        nll -= float((picked * w).sum())
        unigram_nll -= float((unigram[ids] * w).sum())
        correct += float(((np.argmax(logits, axis=-1) == ids) * w).sum())
        guessed += float(((ids == most_frequent) * w).sum())
        count += float(w.sum())
    count = max(count, 1.0)
    return Evaluation(
        metrics={
            "test_masked_accuracy": correct / count,
            "test_masked_perplexity": float(np.exp(nll / count)),
            "baseline_masked_accuracy": guessed / count,
            "baseline_masked_perplexity": float(np.exp(unigram_nll / count)),
        }
    )


class BertClassifierRecipe(Recipe):
    """Phase 1 on the frozen (pretrained) encoder, phase 2 with it unfrozen."""

    tasks = ("classification",)

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: BertClassifierConfig,
        log: RunLog,
    ) -> History:
        if config.pretrained:
            log.params(backbone_params(config.backbone))
        budget = label_budget(prepared, config.train_examples, train.seed)
        log.params({"train_examples_used": len(budget.splits["train"].y)})
        history = fit_phase(1, model, budget, train, callbacks, log, train.epochs)
        if config.fine_tune_epochs == 0:
            return history
        model.get_layer(ENCODER_LAYER).trainable = True
        slower = train.replace(learning_rate=config.fine_tune_learning_rate)
        compile_model(model, prepared.manifest.task, slower)
        offset = len(history.get("loss", []))
        second = fit_phase(
            2, model, budget, slower, callbacks, log, config.fine_tune_epochs, offset
        )
        return {k: history.get(k, []) + second.get(k, []) for k in {*history, *second}}


def label_budget(prepared: PreparedData, examples: int, seed: int) -> PreparedData:
    """`prepared` with its training split cut to `examples` texts (0: all), the same share of
    each class (at least one each), chosen under `seed`."""
    split = prepared.splits["train"]
    labels = np.asarray(split.y)
    if examples == 0 or examples >= len(labels):
        return prepared
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.maximum(1, np.round(counts / counts.sum() * examples)).astype(int)
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quotas, strict=True)
    ]
    keep = np.sort(np.concatenate(chosen))
    budget = Split(_chosen_inputs(split, keep), labels[keep])
    return dataclasses.replace(prepared, splits={**prepared.splits, "train": budget})


def _chosen_inputs(split: Split, keep: np.ndarray) -> np.ndarray:
    """The inputs of the examples at the sorted indices `keep`, read batch by batch: only the
    chosen texts are held, not the split."""
    parts, start = [], 0
    for x, _ in split.batches():
        inside = keep[(keep >= start) & (keep < start + len(x))] - start
        parts.append(np.asarray(x)[inside])
        start += len(x)
    return np.concatenate(parts) if parts else np.asarray(split.x)[keep]


def backbone_params(backbone: str) -> dict[str, str]:
    """The pretraining run behind a backbone path: its folder and MLflow run id (from the
    run folder's config.json), so the fine-tune's lineage names it."""
    folder = Path(backbone).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    config = folder / "config.json"
    run_id = json.loads(config.read_text()).get("run_id", "") if config.is_file() else ""
    return {"backbone_path": str(folder.resolve()), "backbone_run_id": run_id or "unknown"}
