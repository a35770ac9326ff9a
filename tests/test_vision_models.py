"""ViT, autoencoder and GAN builders through the shared harness; scorer and adversarial step."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasops.errors import ConfigError
from kerasops.models import build_model, preset_values
from kerasops.models.autoencoder import build_anomaly_scorer
from kerasops.models.gan import AdversarialTrainer, GanConfig, build_discriminator
from kerasops.models.layers import PatchExtraction
from tests.harness import run_builder_test

IMAGE = {
    "kind": "image",
    "task": "classification",
    "shape": [8, 8, 1],
    "num_outputs": 10,
    "pixel_max": 240.0,
}
RECONSTRUCTION = {**IMAGE, "task": "reconstruction", "num_outputs": 64}
GENERATION = {**IMAGE, "task": "generation", "num_outputs": 64}
IMAGES = np.random.default_rng(0).uniform(0, 240, (3, 8, 8, 1)).astype("float32")
NOISE = np.random.default_rng(1).normal(size=(3, 32)).astype("float32")


def config(model: str, preset: str, inputs: dict, **extra) -> dict:
    return {**preset_values(model, preset), "inputs": inputs, **extra}


SLOW = pytest.mark.slow  # the ViT builds take several seconds each


@pytest.mark.parametrize(
    "name, values, example, shape",
    [
        pytest.param("vit", config("vit", "vit_tiny", IMAGE), IMAGES, (3, 10), marks=SLOW),
        pytest.param("vit", config("vit", "vit_tiny", IMAGE, patch_size=4, pooling="mean"),
                     IMAGES, (3, 10), marks=SLOW),
        ("autoencoder", config("autoencoder", "autoencoder_dense_small", RECONSTRUCTION), IMAGES,
         (3, 8, 8, 1)),
        ("autoencoder", config("autoencoder", "autoencoder_conv_small", RECONSTRUCTION), IMAGES,
         (3, 8, 8, 1)),
        ("autoencoder", config("autoencoder", "autoencoder_denoise_small", RECONSTRUCTION), IMAGES,
         (3, 8, 8, 1)),
        ("gan", config("gan", "gan_small", GENERATION), NOISE, (3, 8, 8, 1)),
    ],
)  # fmt: skip
def test_builder_harness(name, values, example, shape, tmp_path):
    model = run_builder_test(name, values, example, shape, tmp_path)
    if name == "autoencoder":
        out = model.predict(example, verbose=0)
        assert out.min() >= 0.0 and out.max() <= 1.0  # reconstruction in pixels / pixel_max
    if name == "gan":
        assert model.inputs[0].name == "noise" and model.output_names == ["image"]
        images = model.predict(example, verbose=0)
        assert images.min() >= 0.0 and images.max() <= 240.0  # raw pixel units


def test_patches_are_the_image_cut_in_squares():
    image = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    patches = np.asarray(PatchExtraction(2)(image))
    assert patches.shape == (1, 4, 4)
    np.testing.assert_array_equal(patches[0, 0], [0, 1, 4, 5])  # top-left square, row-major
    np.testing.assert_array_equal(patches[0, 3], [10, 11, 14, 15])  # bottom-right square


@pytest.mark.parametrize(
    "model, values, message",
    [
        ("vit", {"inputs": IMAGE, "patch_size": 3}, "patch_size 3 must divide"),
        ("vit", {"inputs": IMAGE, "embed_dim": 30, "num_heads": 4}, "divisible by num_heads"),
        ("autoencoder", {"inputs": IMAGE, "architecture": "conv", "filters": [8, 8, 8, 8]},
         "not divisible"),
        ("autoencoder", {"inputs": IMAGE, "mode": "sharpen"}, "mode"),
        ("gan", {"inputs": IMAGE, "generator_filters": [8, 8, 8, 8]}, "not divisible"),
        ("gan", {"inputs": {**IMAGE, "kind": "tabular", "shape": [4]}}, "takes image data"),
    ],
)  # fmt: skip
def test_bad_configs_name_the_problem(model, values, message):
    with pytest.raises(ConfigError, match=message):
        build_model(model, values)


def test_denoising_noise_acts_only_in_training():
    model = build_model("autoencoder", config("autoencoder", "autoencoder_denoise_small", IMAGE))
    inference = [np.asarray(model(IMAGES, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(*inference)
    assert not np.allclose(np.asarray(model(IMAGES, training=True)), inference[0])


def test_anomaly_scorer_scores_and_flags_with_its_threshold(tmp_path):
    autoencoder = build_model(
        "autoencoder", config("autoencoder", "autoencoder_dense_small", IMAGE)
    )
    reconstruction = np.asarray(autoencoder.predict(IMAGES, verbose=0))
    expected = np.mean((IMAGES / 240.0 - reconstruction).reshape(3, -1) ** 2, axis=1)
    threshold = float(np.sort(expected)[:2].mean())  # between the two lowest scores
    scorer = build_anomaly_scorer(autoencoder, 240.0, threshold)
    out = scorer.predict(IMAGES, verbose=0)
    np.testing.assert_allclose(out["anomaly_score"], expected, rtol=1e-5)
    np.testing.assert_array_equal(out["is_anomaly"], (expected > threshold).astype("float32"))

    scorer.save(tmp_path / "scorer.keras")
    reloaded = keras.saving.load_model(tmp_path / "scorer.keras")
    assert reloaded.get_layer("is_anomaly").threshold == threshold
    np.testing.assert_allclose(
        reloaded.predict(IMAGES, verbose=0)["anomaly_score"], expected, rtol=1e-5
    )


def test_adversarial_step_updates_both_networks():
    gan_config = GanConfig.from_dict(config("gan", "gan_small", GENERATION))
    generator = build_model("gan", gan_config)
    discriminator = build_discriminator(gan_config)
    trainer = AdversarialTrainer(generator, discriminator, gan_config.latent_dim)
    trainer.compile(
        d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3)
    )
    before = [np.array(w) for w in (generator.weights[0], discriminator.weights[0])]
    history = trainer.fit(IMAGES, np.zeros(3), epochs=1, batch_size=3, verbose=0).history
    assert {"d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy"} <= set(history)
    after = [np.array(w) for w in (generator.weights[0], discriminator.weights[0])]
    assert all(not np.allclose(b, a) for b, a in zip(before, after, strict=True))
