"""How the encoder-decoder translator trains: teacher-forced cross-entropy; it is scored by
exact match and character BLEU of greedy decoding against copying the source, and served as
source in, translation out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerasops.data import Manifest, PreparedData
from kerasops.models.evaluation import Evaluation
from kerasops.models.inputs import InputSpec
from kerasops.models.sequence import SequenceRecipe, trained_model
from kerasops.models.sequence import texts as split_texts
from kerasops.models.text import END_TOKEN, START_TOKEN, character_vocabulary
from kerasops.models.training import TrainConfig
from kerasops.models.translator.builder import build_greedy_translator
from kerasops.models.translator.metrics import translation_scores


class TranslationRecipe(SequenceRecipe):
    """Teacher forcing on (source, target) pairs; greedy decoding for scores and serving."""

    tasks = ("translation",)

    def wrong_task(self, manifest: Manifest) -> str:
        return (
            f"dataset {manifest.name!r} is a {manifest.task} dataset; the translator needs a "
            "translation one (e.g. dates, or a translation_csv source)"
        )

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        """One character vocabulary for sources and targets (after `[START]` and `[END]`), the
        longest training source as the source length and the longest target + 1 as the
        target's."""
        split, stats = prepared.splits["train"], prepared.manifest.stats
        both = [*split_texts(split.x), *split_texts(split.y)]
        vocabulary = character_vocabulary(both, train.max_tokens, (START_TOKEN, END_TOKEN))
        return InputSpec.from_dict(
            {
                "kind": "text",
                "task": "translation",
                "shape": [],
                "num_outputs": len(vocabulary) + 2,
                "vocabulary": vocabulary,
                "sequence_length": int(stats["source_characters_max"]),
                "target_length": int(stats["target_characters_max"]) + 1,
            },
            prefix="inputs.",
        )

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: Any, split: str = "test"
    ) -> Evaluation:
        return evaluate_translator(model, prepared, split)

    def serving_model(self, model: keras.Model, config: Any, evaluation: Evaluation) -> keras.Model:
        return build_greedy_translator(model)


def translate(model: keras.Model, sources: Sequence[str], batch_size: int = 256) -> list[str]:
    """Greedy translations of `sources` by a translator built by `build_translator`."""
    greedy = build_greedy_translator(model)
    outputs = greedy.predict(np.asarray(sources, dtype=object), batch_size=batch_size, verbose=0)
    return split_texts(np.asarray(outputs).reshape(-1))


def evaluate_translator(
    model: keras.Model, prepared: PreparedData, split: str = "test"
) -> Evaluation:
    """Exact match and character BLEU of greedy translations of `split`'s sources, against
    copying each source unchanged. `model` may be the greedy translator wrapping it."""
    model = trained_model(model)
    data = prepared.splits[split]
    sources, references = split_texts(data.x), split_texts(data.y)
    return Evaluation(metrics=translation_scores(sources, references, translate(model, sources)))
