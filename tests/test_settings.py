"""params.yaml and run-config resolution: precedence, strictness, clear errors."""

from __future__ import annotations

import pytest

from kerasops.errors import ConfigError
from kerasops.pipelines.config import load_params, resolve_run_config
from tests.conftest import write_params


def test_precedence_defaults_preset_params_then_overrides(tmp_path):
    path = write_params(
        tmp_path,
        train={"epochs": 7},
        models={"cnn": {"preset": "cnn_base", "dropout": 0.1, "train": {"batch_size": 16}}},
    )
    params = load_params(path)
    config = resolve_run_config(params, "cnn", "digits", overrides=["dense_units=32", "epochs=3"])
    assert config.preset == "cnn_base"
    assert config.model_values["filters"] == [32, 64, 128]  # from the preset
    assert config.model_values["dropout"] == 0.1  # params.yaml over the preset
    assert config.model_values["dense_units"] == 32  # --set over everything
    assert config.train.epochs == 3 and config.train.batch_size == 16
    explicit = resolve_run_config(
        params,
        "cnn",
        "digits",
        preset="cnn_small",
        overrides=["train.epochs=2", "model.kernel_size=5"],
    )
    assert explicit.model_values["filters"] == [32, 64]
    assert explicit.train.epochs == 2 and explicit.model_values["kernel_size"] == 5


def test_params_hash_is_stable_and_sensitive(tmp_path):
    params = load_params(write_params(tmp_path))
    a = resolve_run_config(params, "rnn", "sunspots")
    b = resolve_run_config(params, "rnn", "sunspots")
    c = resolve_run_config(params, "rnn", "sunspots", overrides=["units=[16]"])
    assert a.params_hash() == b.params_hash() != c.params_hash()


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"trian": {"epochs": 3}}, "unknown key trian for Params"),
        ({"train": {"epoch": 3}}, "unknown key train.epoch for TrainConfig"),
        ({"train": {"epochs": "many"}}, "train.epochs: expected an integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1"),
        ({"tracking": {"experiment": 5}}, "tracking.experiment: expected a string"),
    ],
)
def test_bad_params_name_the_key(tmp_path, sections, message):
    with pytest.raises(ConfigError) as info:
        load_params(write_params(tmp_path, **sections))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["filterz=[8]"], "unknown key 'filterz' for model cnn"),
        (["train.dropout=0.1"], "unknown key 'train.dropout'"),
        (["dropout=lots"], "dropout: expected a number"),
        (["epochs=1.5"], "train.epochs: expected an integer"),
        (["epochs"], "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, overrides, message):
    params = load_params(write_params(tmp_path))
    with pytest.raises(ConfigError) as info:
        resolve_run_config(params, "cnn", "digits", overrides=overrides)
    assert message in str(info.value)


def test_invalid_yaml_is_one_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_exponent_notation_is_a_number_in_params_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; a float key takes it as the number."""
    (tmp_path / "params.yaml").write_text("train:\n  learning_rate: 3e-4\n")
    params = load_params(tmp_path / "params.yaml")
    assert params.train.learning_rate == pytest.approx(3e-4)
    run = resolve_run_config(params, "cnn", "digits", overrides=["learning_rate=1E-2"])
    assert run.train.learning_rate == pytest.approx(1e-2)
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        resolve_run_config(params, "cnn", "digits", overrides=["epochs=1e1x"])


def test_only_true_and_false_are_booleans_as_dvc_reads_params(tmp_path):
    """`dvc exp run --set-param` writes params.yaml back with yes/no/on/off unquoted (YAML 1.2,
    where they are strings); they stay the spoken words, and true/false stay booleans."""
    (tmp_path / "params.yaml").write_text(
        "datasets:\n  speech_commands:\n    words: [yes, no, on, off, stop]\n"
        "models:\n  rnn:\n    bidirectional: true\n"
    )
    params = load_params(tmp_path / "params.yaml")
    assert params.datasets["speech_commands"].words == ("yes", "no", "on", "off", "stop")
    run = resolve_run_config(params, "rnn", "sunspots", overrides=["bidirectional=False"])
    assert run.model_values["bidirectional"] is False
    assert resolve_run_config(params, "rnn", "sunspots").model_values["bidirectional"] is True
