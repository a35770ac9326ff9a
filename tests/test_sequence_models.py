"""The language model and the translator: builders through the shared harness, tokenization,
causality, greedy decoding, save/reload and SavedModel export of the text-in, text-out models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasops.errors import ConfigError
from kerasops.models import build_model, preset_values
from kerasops.models.language_model import build_text_generator
from kerasops.models.text import (
    END_TOKEN,
    START_TOKEN,
    CharTokenizer,
    character_vocabulary,
    ids_to_text,
)
from kerasops.models.translator import build_greedy_translator
from tests.harness import run_builder_test

LM_VOCABULARY = list(" etaoinshrdlcum.T")
LM_INPUTS = {
    "kind": "text",
    "task": "language_modeling",
    "shape": [],
    "num_outputs": len(LM_VOCABULARY) + 2,
    "vocabulary": LM_VOCABULARY,
    "sequence_length": 8,
}
TRANSLATION_VOCABULARY = [START_TOKEN, END_TOKEN, *"0123456789-/ ,.MarchJnuy"]
TRANSLATION_INPUTS = {
    "kind": "text",
    "task": "translation",
    "shape": [],
    "num_outputs": len(TRANSLATION_VOCABULARY) + 2,
    "vocabulary": TRANSLATION_VOCABULARY,
    "sequence_length": 14,
    "target_length": 11,
}
TINY_LM = {"embed_dim": 16, "num_heads": 2, "ff_dim": 32, "num_layers": 1, "dropout": 0.0}
TINY_TRANSLATOR = {
    "embed_dim": 16,
    "num_heads": 2,
    "ff_dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "dropout": 0.0,
}
PROMPTS = np.array(["the cat sat on", "hi", "", "Tea\u00e9"], dtype=object)
SOURCES = np.array(["3 March 2021", "03/03/21", "", "January 12, 1999 and more"], dtype=object)
TARGETS = np.array(["2021-03-03", "2021-03-03", "", "1999-01-12"], dtype=object)


@pytest.fixture(scope="module")
def language_model() -> keras.Model:
    return build_model("language_model", {**TINY_LM, "inputs": LM_INPUTS})


@pytest.fixture(scope="module")
def translator() -> keras.Model:
    return build_model("translator", {**TINY_TRANSLATOR, "inputs": TRANSLATION_INPUTS})


@pytest.mark.slow
def test_language_model_through_the_builder_harness(tmp_path):
    config = {**preset_values("language_model", "language_model_tiny"), "inputs": LM_INPUTS}
    run_builder_test("language_model", config, PROMPTS, (4, 8, len(LM_VOCABULARY) + 2), tmp_path)


@pytest.mark.slow
def test_translator_through_the_builder_harness(tmp_path):
    config = {**preset_values("translator", "translator_tiny"), "inputs": TRANSLATION_INPUTS}
    example = {"source": SOURCES, "target": TARGETS}
    shape = (4, 11, len(TRANSLATION_VOCABULARY) + 2)
    run_builder_test("translator", config, example, shape, tmp_path)


def test_builders_refuse_the_other_task_naming_it():
    with pytest.raises(ConfigError, match="language_modeling dataset.*not a translation"):
        build_model("language_model", {"inputs": {**TRANSLATION_INPUTS}})
    with pytest.raises(ConfigError, match="translation dataset.*not a language_modeling"):
        build_model("translator", {"inputs": {**LM_INPUTS, "target_length": 4}})
    with pytest.raises(ConfigError, match="max_new_tokens"):
        build_model("language_model", {"inputs": LM_INPUTS, "max_new_tokens": 0})


def test_char_tokenizer_pads_marks_unknowns_and_adds_special_tokens():
    vocabulary = [START_TOKEN, END_TOKEN, "a", "b"]
    plain = CharTokenizer(vocabulary, 4)
    np.testing.assert_array_equal(
        plain(tf.constant(["ab", "abzab", ""])).numpy(), [[4, 5, 0, 0], [4, 5, 1, 4], [0, 0, 0, 0]]
    )  # ids: 0 pad, 1 unknown (z), then the vocabulary from 2
    decoder_input = CharTokenizer(vocabulary, 4, start_token=START_TOKEN)
    np.testing.assert_array_equal(decoder_input(tf.constant(["ab"])).numpy(), [[2, 4, 5, 0]])
    labels = CharTokenizer(vocabulary, 4, end_token=END_TOKEN)
    np.testing.assert_array_equal(labels(tf.constant(["abbab"])).numpy(), [[4, 5, 5, 3]])
    prompt = CharTokenizer(vocabulary, 3, keep="last")
    np.testing.assert_array_equal(prompt(tf.constant(["aabab"])).numpy(), [[5, 4, 5]])
    text = ids_to_text(tf.constant([[4, 5, 3, 4], [2, 4, 1, 0]]), vocabulary, stop_id=3)
    assert text.numpy().tolist() == [b"ab", b"a"]  # stops at [END]; specials, unknowns drop


def test_character_vocabulary_ranks_by_frequency_and_caps_the_ids():
    assert character_vocabulary(["abb", "cb"], 100) == ["b", "a", "c"]
    assert character_vocabulary(["abb", "cb"], 4, (START_TOKEN,)) == [START_TOKEN, "b"]


def test_language_model_is_causal(language_model):
    # Changing the text after position 3 must leave the logits of positions 0..3 unchanged.
    first = language_model.predict(np.array(["the cat."], dtype=object), verbose=0)
    second = language_model.predict(np.array(["the Tea "], dtype=object), verbose=0)
    np.testing.assert_allclose(first[:, :4], second[:, :4], atol=1e-5)
    assert not np.allclose(first[:, 4:], second[:, 4:], atol=1e-3)


@pytest.mark.slow
def test_text_generator_continues_every_prompt_and_survives_save_and_export(
    language_model, tmp_path
):
    generator = build_text_generator(language_model, max_new_tokens=12)
    continuations = generator.predict(PROMPTS, verbose=0)
    assert continuations.shape == (4,)
    for text in continuations:
        assert len(text.decode("utf-8")) == 12  # every generated id is a vocabulary character
        assert set(text.decode("utf-8")) <= set(LM_VOCABULARY)
    # A prompt longer than the context keeps its end: only the last 8 characters matter.
    long = generator.predict(np.array(["x" * 50 + "the cat.", "the cat."], dtype=object), verbose=0)
    assert long[0] == long[1]

    generator.save(tmp_path / "generator.keras")
    reloaded = keras.saving.load_model(tmp_path / "generator.keras")
    assert reloaded.predict(PROMPTS, verbose=0).tolist() == continuations.tolist()

    generator.export(str(tmp_path / "generator"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "generator"))
    served = loaded.serve(tf.constant(PROMPTS))
    assert served.numpy().tolist() == continuations.tolist()


@pytest.mark.slow
def test_greedy_translator_decodes_strings_and_survives_save_and_export(translator, tmp_path):
    greedy = build_greedy_translator(translator)
    translations = greedy.predict(SOURCES, verbose=0)
    assert translations.shape == (4,)
    for text in translations:
        assert len(text.decode("utf-8")) <= 10  # at most target_length - 1 characters

    greedy.save(tmp_path / "translator.keras")
    reloaded = keras.saving.load_model(tmp_path / "translator.keras")
    assert reloaded.predict(SOURCES, verbose=0).tolist() == translations.tolist()
    inner = reloaded.get_layer("translation").translator  # the trained model rides along
    np.testing.assert_allclose(
        inner.predict({"source": SOURCES, "target": TARGETS}, verbose=0),
        translator.predict({"source": SOURCES, "target": TARGETS}, verbose=0),
        atol=1e-5,
    )

    greedy.export(str(tmp_path / "greedy"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "greedy"))
    served = loaded.serve(tf.constant(SOURCES))
    assert served.numpy().tolist() == translations.tolist()


def test_greedy_translation_matches_step_by_step_teacher_forcing(translator):
    # Feeding the greedy output back as the target reproduces each greedy choice.
    greedy = build_greedy_translator(translator)
    translations = [t.decode("utf-8") for t in greedy.predict(SOURCES[:2], verbose=0)]
    logits = translator.predict(
        {"source": SOURCES[:2], "target": np.array(translations, dtype=object)}, verbose=0
    )
    vocabulary = ["", "", *TRANSLATION_VOCABULARY]
    for row, text in enumerate(translations):
        for position, char in enumerate(text):
            allowed = logits[row, position].copy()
            allowed[[0, 1, 2]] = -np.inf  # padding, unknown and [START] are never chosen
            assert vocabulary[int(np.argmax(allowed))] == char
