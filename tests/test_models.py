"""Every builder through the shared harness, plus the registry's errors."""

from __future__ import annotations

import numpy as np
import pytest

from kerasops.config import parse_override
from kerasops.errors import ConfigError
from kerasops.models import PRESETS, build_model, get_family, preset_values
from tests.harness import run_builder_test

IMAGE = {
    "kind": "image",
    "task": "classification",
    "shape": [8, 8, 1],
    "num_outputs": 10,
    "pixel_max": 240.0,
}
TABULAR = {
    "kind": "tabular",
    "task": "classification",
    "shape": [4],
    "num_outputs": 3,
    "mean": [0.0, 1.0, 2.0, 3.0],
    "variance": [1.0, 2.0, 3.0, 4.0],
}
TEXT = {
    "kind": "text",
    "task": "classification",
    "shape": [],
    "num_outputs": 3,
    "vocabulary": ["the", "cat", "dog", "sat", "ran"],
    "sequence_length": 6,
}
SERIES = {
    "kind": "timeseries",
    "task": "regression",
    "shape": [5, 1],
    "num_outputs": 2,
    "mean": [10.0],
    "variance": [4.0],
}

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 240, (3, 8, 8, 1)).astype("float32")
ROWS = RNG.normal(size=(3, 4)).astype("float32")
TEXTS = np.array(["the cat sat", "dog ran away fast", ""], dtype=object)
WINDOWS = RNG.normal(10, 2, (3, 5, 1)).astype("float32")


def with_preset(model: str, preset: str, inputs: dict, **extra) -> dict:
    return {**preset_values(model, preset), "inputs": inputs, **extra}


@pytest.mark.parametrize(
    "name, config, example, shape",
    [
        ("mlp", with_preset("mlp", "mlp_small", TABULAR), ROWS, (3, 3)),
        ("mlp", with_preset("mlp", "mlp_small", IMAGE, activation="gelu"), IMAGES, (3, 10)),
        ("cnn", with_preset("cnn", "cnn_small", IMAGE), IMAGES, (3, 10)),
        ("cnn", with_preset("cnn", "cnn_base", IMAGE, pooling="flatten"), IMAGES, (3, 10)),
        ("rnn", with_preset("rnn", "rnn_lstm_small", TEXT), TEXTS, (3, 3)),
        pytest.param(
            "rnn",
            with_preset("rnn", "rnn_bilstm_base", TEXT),
            TEXTS,
            (3, 3),
            marks=pytest.mark.slow,
        ),
        ("rnn", with_preset("rnn", "rnn_gru_small", SERIES), WINDOWS, (3, 2)),
        (
            "rnn",
            with_preset("rnn", "rnn_simple_small", SERIES, bidirectional=True),
            WINDOWS,
            (3, 2),
        ),
        ("transformer", with_preset("transformer", "transformer_tiny", TEXT), TEXTS, (3, 3)),
    ],
    ids=[
        "mlp-tabular",
        "mlp-image",
        "cnn",
        "cnn-flatten",
        "lstm-text",
        "bilstm-text",
        "gru-series",
        "birnn-series",
        "transformer",
    ],
)
def test_builder_harness(name, config, example, shape, tmp_path):
    model = run_builder_test(name, config, example, shape, tmp_path)
    if shape[1] and config["inputs"]["task"] == "classification":
        np.testing.assert_allclose(model.predict(example, verbose=0).sum(axis=1), 1.0, atol=1e-5)


def test_inputs_and_outputs_are_named_by_role():
    model = build_model("cnn", with_preset("cnn", "cnn_small", IMAGE))
    assert model.inputs[0].name == "image"
    assert model.output_names == ["probabilities"]
    forecaster = build_model("rnn", with_preset("rnn", "rnn_lstm_small", SERIES))
    assert forecaster.inputs[0].name == "series"
    assert forecaster.output_names == ["forecast"]


def test_untrained_forecaster_starts_at_the_last_value():
    forecaster = build_model("rnn", with_preset("rnn", "rnn_lstm_small", SERIES))
    predictions = forecaster.predict(WINDOWS, verbose=0)
    np.testing.assert_allclose(predictions, np.repeat(WINDOWS[:, -1, :], 2, axis=1), rtol=1e-6)


def test_every_preset_names_a_registered_family():
    for name, values in PRESETS.items():
        family = get_family(values["model"])
        family.config.from_dict(preset_values(values["model"], name))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: get_family("resnet9000"), "unknown model 'resnet9000'; known models: "),
        (lambda: preset_values("cnn", "cnn_huge"), "unknown preset 'cnn_huge'; presets for cnn"),
        (lambda: preset_values("cnn", "rnn_lstm_small"), "is for model 'rnn', not 'cnn'"),
        (lambda: build_model("cnn", {"filterz": [1]}), "unknown key filterz for CnnConfig"),
        (lambda: build_model("cnn", {"filters": "many"}), "filters: expected a list"),
        (lambda: build_model("cnn", {"dropout": "high"}), "dropout: expected a number"),
        (lambda: build_model("rnn", {"cell": "transformer"}), "'transformer' is not one of"),
        (lambda: build_model("cnn", {"inputs": TEXT}), "takes image data, not text data"),
        (lambda: build_model("transformer", {"num_heads": 3}), "must be divisible by"),
        (lambda: build_model("cnn", {}), "config.inputs is not set"),
        (lambda: parse_override("epochs"), "expected key=value"),
    ],
)
def test_bad_configs_name_the_problem(call, message):
    with pytest.raises(ConfigError, match=None) as info:
        call()
    assert message in str(info.value)
