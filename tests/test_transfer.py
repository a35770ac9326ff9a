"""Transfer learning: backbones, weights (imagenet offline, pre-seeded cache, PATH), the two
training phases' invariants, and a digits run that trains, exports, serves and reloads."""

from __future__ import annotations

import dataclasses
import time
import urllib.request
from typing import get_args

import h5py
import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.data import PreparedData, Split, load_prepared
from kerasops.errors import ConfigError, KerasopsError
from kerasops.models import PRESETS, build_model, preset_values
from kerasops.models.training import TrainConfig, compile_model, fit, trainable_count
from kerasops.models.transfer import start_fine_tuning
from kerasops.models.transfer.builder import (
    BACKBONES,
    BackboneName,
    BackbonePreprocess,
    TransferConfig,
    backbone_of,
    is_batchnorm,
    unfreeze_top_layers,
)
from kerasops.pipelines.cli import main
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps.prepare import ensure_prepared
from kerasops.pipelines.tracking import store as tracking
from tests.conftest import train_run, write_params
from tests.harness import run_builder_test

SPEC = {
    "kind": "image",
    "task": "classification",
    "shape": [8, 8, 1],
    "num_outputs": 10,
    "pixel_max": 240.0,
}
HEAD_PARAMS = 1280 * 10 + 10  # MobileNetV2's 1280 features -> 10 classes
MOBILENET_96_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"


def transfer_config(**values) -> dict:
    return {
        "inputs": SPEC,
        "backbone": "mobilenet_v2",
        "weights": "none",
        "image_size": 32,
        **values,
    }


def pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 240, (count, 8, 8, 1)).astype("float32")


def random_backbone(size: int, seed: int = 7) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size,) * 2 + (3,)
    )


def layer_weights(layers) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.numpy() for w in layer.weights] for layer in layers if layer.weights}


def changed(before: dict, after: dict) -> set[str]:
    return {
        name
        for name, weights in before.items()
        if any(not np.array_equal(a, b) for a, b in zip(weights, after[name], strict=True))
    }


@pytest.fixture
def offline_keras_cache(tmp_path, monkeypatch):
    """An empty Keras cache, and HTTPS through a closed loopback port: downloads fail at once."""
    home = tmp_path / "keras_home"
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(home))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # re-read the proxy settings
    return home


# --- config and registry -----------------------------------------------------------------


def test_backbone_table_presets_and_strict_config():
    assert set(get_args(BackboneName)) == set(BACKBONES)
    for required in ("mobilenet_v2", "resnet50", "efficientnet_b0", "vgg16", "inception_v3"):
        assert required in BACKBONES
    presets = [name for name, values in PRESETS.items() if values["model"] == "transfer"]
    assert "transfer_mobilenet_small" in presets
    for name in presets:
        TransferConfig.from_dict(preset_values("transfer", name))
    with pytest.raises(ConfigError, match="inception_v3's minimum of 75"):
        TransferConfig.from_dict({"backbone": "inception_v3", "image_size": 64})
    with pytest.raises(ConfigError, match="backbone"):
        TransferConfig.from_dict({"backbone": "alexnet"})
    with pytest.raises(ConfigError, match=r"augmentation\[0\]"):
        TransferConfig.from_dict({"augmentation": ["blur"]})
    assert TransferConfig(backbone="inception_v3").size == 299
    with pytest.raises(ConfigError, match="fine_tune_layers is 500, but mobilenet_v2 has 154"):
        build_model("transfer", transfer_config(fine_tune_layers=500))
    model = build_model("transfer", transfer_config())
    with pytest.raises(KerasopsError, match="last 1 layers of mobilenet_v2 hold no weights"):
        unfreeze_top_layers(model, 1)  # out_relu


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_preprocess_layer_is_the_backbones_own_preprocess_input(backbone):
    images = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    module = getattr(keras.applications, BACKBONES[backbone].module)
    expected = module.preprocess_input(images.copy())
    layer = BackbonePreprocess(backbone)
    np.testing.assert_allclose(np.asarray(layer(images)), expected, atol=1e-5)
    assert BackbonePreprocess.from_config(layer.get_config()).backbone == backbone


# --- the builder -------------------------------------------------------------------------


@pytest.mark.slow
def test_transfer_builder_passes_the_harness_frozen_for_phase_one(tmp_path):
    config = transfer_config(augmentation=["rotation", "zoom", "contrast"], head_units=16)
    model = run_builder_test("transfer", config, pixels(3), (3, 10), tmp_path)
    names = [layer.name for layer in model.layers]
    for name in ("to_rgb", "resize", "augment_zoom", "backbone_preprocess", "backbone"):
        assert name in names
    assert names[-4:] == ["head_pool", "head_dropout", "head_dense", "probabilities"]
    assert not backbone_of(model).trainable_weights
    assert trainable_count(model) == 1280 * 16 + 16 + 16 * 10 + 10
    assert model.get_layer("resize").output.shape == (None, 32, 32, 3)


def test_backbone_runs_in_inference_mode_even_when_fitting():
    model = build_model("transfer", transfer_config(head_dropout=0.0))
    backbone = backbone_of(model)
    backbone.trainable = True  # even trainable BatchNorm must not use batch statistics
    norm = next(layer for layer in backbone.layers if is_batchnorm(layer))
    mean_before = norm.moving_mean.numpy()
    images = pixels(8)
    np.testing.assert_allclose(
        np.asarray(model(images, training=True)),
        np.asarray(model(images, training=False)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(norm.moving_mean.numpy(), mean_before)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - {"mobilenet_v2"}))
def test_every_backbone_builds_frozen_and_round_trips(backbone, tmp_path):
    size = BACKBONES[backbone].min_size
    config = transfer_config(backbone=backbone, image_size=size, fine_tune_layers=0)
    model = build_model("transfer", config)
    images = pixels(2)
    expected = np.asarray(model.predict(images, verbose=0))
    assert expected.shape == (2, 10) and np.all(np.isfinite(expected))
    features = backbone_of(model).output.shape[-1]
    assert trainable_count(model) == features * 10 + 10
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-5)
    unfrozen = unfreeze_top_layers(model, min(30, len(backbone_of(model).layers)))
    assert unfrozen and not any(
        is_batchnorm(model.get_layer("backbone").backbone.get_layer(n)) for n in unfrozen
    )


# --- weights -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_backbone(tmp_path_factory):
    """A randomly initialised MobileNetV2 saved as .weights.h5 and .keras, and its outputs."""
    folder = tmp_path_factory.mktemp("backbone")
    backbone = random_backbone(32)
    backbone.save_weights(folder / "mobilenet_v2.weights.h5")
    backbone.save(folder / "mobilenet_v2.keras")
    images = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    return folder, images, np.asarray(backbone(images))


@pytest.mark.slow
@pytest.mark.parametrize("file_name", ["mobilenet_v2.weights.h5", "mobilenet_v2.keras"])
def test_weights_path_gives_identical_backbone_outputs(saved_backbone, file_name):
    folder, images, expected = saved_backbone
    model = build_model("transfer", transfer_config(weights=str(folder / file_name)))
    np.testing.assert_array_equal(np.asarray(backbone_of(model)(images)), expected)
    fresh = build_model("transfer", transfer_config(weights="none"))
    assert not np.allclose(np.asarray(backbone_of(fresh)(images)), expected, rtol=1e-3, atol=0)


def test_bad_weights_paths_are_one_line_errors(tmp_path):
    with pytest.raises(KerasopsError, match="neither imagenet, none nor an existing file"):
        build_model("transfer", transfer_config(weights=str(tmp_path / "missing.weights.h5")))
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(KerasopsError, match="does not fit the mobilenet_v2 backbone") as error:
        build_model("transfer", transfer_config(weights=str(tmp_path / "other.weights.h5")))
    assert "\n" not in str(error.value)


def test_imagenet_offline_names_the_missing_file_and_both_remedies(offline_keras_cache):
    started = time.monotonic()
    with pytest.raises(KerasopsError) as error:
        build_model("transfer", transfer_config(weights="imagenet", image_size=96))
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert "\n" not in message
    assert MOBILENET_96_FILE in message
    assert str(offline_keras_cache / "models") in message
    assert "weights: PATH" in message


def test_imagenet_weights_come_from_a_preseeded_keras_cache(offline_keras_cache):
    from keras.src.legacy.saving import legacy_h5_format

    source = random_backbone(96, seed=11)
    (offline_keras_cache / "models").mkdir(parents=True)
    with h5py.File(offline_keras_cache / "models" / MOBILENET_96_FILE, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)  # Keras' download format
    model = build_model("transfer", transfer_config(weights="imagenet", image_size=96))
    images = np.random.default_rng(5).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(backbone_of(model)(images)), np.asarray(source(images))
    )


def test_cli_reports_offline_imagenet_in_one_line(project, offline_keras_cache, capsys):
    argv = ["train", "transfer", "--dataset", "digits", "--set", "image_size=32"]
    assert main([*argv, "--set", "weights=imagenet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot download the ImageNet weights of mobilenet_v2")
    assert "\n" not in err and "Traceback" not in err
    assert not (project / "artifacts" / "runs").exists() or not any(
        (project / "artifacts" / "runs").iterdir()
    )


# --- the two phases ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    """A project folder with digits prepared once for this module."""
    root = tmp_path_factory.mktemp("transfer_project")
    write_params(root)
    ensure_prepared(load_params(root / "params.yaml"), "digits")
    return root


def small_digits(root, count: int = 128) -> PreparedData:
    prepared = load_prepared("digits", load_params(root / "params.yaml").path("prepared_data"))
    splits = {k: Split(s.x[:count], s.y[:count]) for k, s in prepared.splits.items()}
    return dataclasses.replace(prepared, splits=splits)


@pytest.mark.slow
def test_phase_one_trains_only_the_head_and_phase_two_only_unfrozen_non_batchnorm(digits_root):
    prepared = small_digits(digits_root)
    train = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-2)
    config = TransferConfig.from_dict(
        transfer_config(fine_tune_layers=12, fine_tune_learning_rate=1e-2)
    )
    keras.utils.set_random_seed(0)
    model = compile_model(build_model("transfer", config), "classification", train)
    model.run_eagerly = True  # two short fits: no graph tracing
    backbone = backbone_of(model)
    head = [model.get_layer("probabilities")]
    assert trainable_count(model) == HEAD_PARAMS

    before = layer_weights([*backbone.layers, *head])
    fit(model, prepared, train, [])
    after = layer_weights([*backbone.layers, *head])
    assert changed(before, after) == {"probabilities"}

    unfrozen = start_fine_tuning(model, config, prepared, train)
    model.run_eagerly = True
    top = backbone.layers[-12:]
    assert set(unfrozen) == {
        layer.name for layer in top if layer.weights and not is_batchnorm(layer)
    }
    expected = HEAD_PARAMS + sum(
        int(np.prod(w.shape)) for layer in top if not is_batchnorm(layer) for w in layer.weights
    )
    assert trainable_count(model) == expected
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)

    fit(model, prepared, train, [])
    final = layer_weights([*backbone.layers, *head])
    assert changed(after, final) == {*unfrozen, "probabilities"}
    norms = {layer.name for layer in backbone.layers if is_batchnorm(layer)}
    assert norms and not norms & changed(after, final)  # gamma, beta and moving statistics


# --- end to end: train, track, export, serve, reload ----------------------------------------


@pytest.mark.slow
def test_transfer_on_digits_trains_tracks_exports_and_serves(digits_root, monkeypatch, tmp_path):
    from kerasops.serving.config import BatchingConfig, ServingConfig
    from kerasops.serving.export import export_saved_model
    from kerasops.serving.servable import Servable

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(digits_root / "params.yaml")
    overrides = [
        "weights=none",
        "image_size=32",
        "epochs=2",
        "fine_tune_epochs=1",
        "fine_tune_layers=20",
        "fine_tune_learning_rate=0.0003",
    ]
    result = train_run(params, "transfer", "digits", overrides=overrides)

    tracking.configure(params)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["phase1_trainable_params"] == str(HEAD_PARAMS)
    assert int(run.data.params["phase2_trainable_params"]) > HEAD_PARAMS
    assert int(run.data.params["calibrated_batchnorm_layers"]) == 52
    history = {
        key: [m.step for m in client.get_metric_history(result.run_id, key)]
        for key in (
            "phase1_loss",
            "phase1_val_accuracy",
            "phase2_loss",
            "phase2_val_accuracy",
            "loss",
        )
    }
    assert history["phase1_loss"] == history["phase1_val_accuracy"] == [1, 2]  # epochs from 1
    assert history["phase2_loss"] == history["phase2_val_accuracy"] == [3]
    assert history["loss"] == [1, 2, 3]
    metrics = run.data.metrics
    for key in ("phase1_seconds", "phase2_seconds", "phase1_test_accuracy"):
        assert metrics[key] > 0
    assert metrics["phase2_test_accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert result.metrics["test_accuracy"] > result.metrics["baseline_majority_accuracy"]

    model = keras.saving.load_model(result.run_dir / "model.keras")  # safe_mode: no Lambda
    test_x = np.asarray(load_prepared("digits", params.path("prepared_data")).splits["test"].x[:16])
    expected = np.asarray(model.predict(test_x, verbose=0))
    logged = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    np.testing.assert_allclose(np.asarray(logged.predict(test_x, verbose=0)), expected, atol=1e-5)

    config = ServingConfig(
        model_repository=str(tmp_path / "models"), models_config=str(tmp_path / "models.config")
    )
    exported = export_saved_model(model, "digits_transfer", config=config, warmup_examples=test_x)
    servable = Servable(
        "digits_transfer", exported.version, exported.path, BatchingConfig(enabled=False)
    )
    try:
        assert servable.warmup(4) == 4
        answer = servable.signature(None).run({"image": test_x})  # raw pixels in
        np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
    finally:
        servable.close()


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "vgg16"])
def test_fine_tune_all_layers_fits_any_backbone(backbone):
    model = build_model("transfer", transfer_config(backbone=backbone, fine_tune_layers=-1))
    unfrozen = unfreeze_top_layers(model, -1)
    layers = backbone_of(model).layers
    expected = [layer.name for layer in layers if layer.weights and not is_batchnorm(layer)]
    assert unfrozen == expected
    assert all(not layer.trainable for layer in layers if is_batchnorm(layer))
