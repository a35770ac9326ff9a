"""A DCGAN for small images: generator (noise -> image) and discriminator (image -> logit).

`build_gan` returns the generator, a plain functional model that is saved, logged and exported
(noise in, raw-pixel `image` out). `AdversarialTrainer` pairs it with the discriminator from
`build_discriminator` and trains both with a custom `train_step` (Goodfellow et al., 2014;
non-saturating generator loss, one-sided label smoothing).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from kerasops.config import StrictConfig, require
from kerasops.models.inputs import InputSpec, model_input, require_inputs, rescale_pixels


@dataclasses.dataclass(frozen=True)
class GanConfig(StrictConfig):
    """Generator and discriminator of a DCGAN.

    Args:
        inputs: filled from the dataset (the image shape and pixel range to generate).
        latent_dim: size of the generator's noise vector.
        generator_filters: transposed-conv filters, each doubling the image side; the image side
            must be divisible by 2 ** len(generator_filters).
        discriminator_filters: strided-conv filters of the discriminator.
        dropout: dropout before the discriminator's logit.
        label_smoothing: real images are labelled `1 - label_smoothing` for the discriminator.
    """

    inputs: InputSpec | None = None
    latent_dim: int = 32
    generator_filters: tuple[int, ...] = (64, 32)
    discriminator_filters: tuple[int, ...] = (32, 64)
    dropout: float = 0.3
    label_smoothing: float = 0.1

    def validate(self) -> None:
        require(self.latent_dim >= 1, "latent_dim must be at least 1")
        require(len(self.generator_filters) > 0, "generator_filters needs at least one block")
        require(len(self.discriminator_filters) > 0, "discriminator_filters needs a block")
        require(
            all(f > 0 for f in (*self.generator_filters, *self.discriminator_filters)),
            "filters must be positive",
        )
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        require(0.0 <= self.label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)")


def image_spec(config: GanConfig) -> InputSpec:
    spec = require_inputs(config.inputs, "gan", ("image",))
    require(len(spec.shape) == 3, f"gan needs (height, width, channels) images, got {spec.shape}")
    return spec


def build_gan(config: GanConfig) -> keras.Model:
    """Return the uncompiled generator: `noise` (latent_dim) -> `image` in raw pixel units."""
    spec = image_spec(config)
    height, width, channels = spec.shape
    scale = 2 ** len(config.generator_filters)
    require(
        height % scale == 0 and width % scale == 0,
        f"gan: image {height}x{width} is not divisible by 2**len(generator_filters)={scale}",
    )
    noise = keras.Input(shape=(config.latent_dim,), name="noise")  # (B, Z)
    start = (height // scale, width // scale, config.generator_filters[0])
    x = keras.layers.Dense(start[0] * start[1] * start[2], name="project")(noise)
    x = keras.layers.LeakyReLU(0.2, name="project_act")(x)
    x = keras.layers.Reshape(start, name="seed_map")(x)  # (B, H/s, W/s, F0)
    for i, filters in enumerate(config.generator_filters):
        x = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=f"up{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"up{i}_bn")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"up{i}_act")(x)  # (B, 2h, 2w, F)
    x = keras.layers.Conv2D(
        channels, 3, padding="same", activation="sigmoid", dtype="float32", name="pixels"
    )(x)  # float32 even under mixed precision
    image = keras.layers.Rescaling(spec.pixel_max, dtype="float32", name="image")(x)  # raw pixels
    return keras.Model(noise, image, name="generator")


@keras.saving.register_keras_serializable(package="kerasops")
class MinibatchStdDev(keras.layers.Layer):
    """Append the batch's mean feature standard deviation to every example (Karras et al., 2018).

    A generator that collapses onto a few images gives batches of low spread, which the
    discriminator can then tell from real batches: a cheap guard against mode collapse.
    """

    def call(self, x):
        spread = ops.mean(ops.std(x, axis=0))  # ()
        column = ops.ones_like(x[:, :1]) * spread  # (B, 1)
        return ops.concatenate([x, column], axis=-1)  # (B, D + 1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


def build_discriminator(config: GanConfig) -> keras.Model:
    """Return the discriminator: raw image -> `logit` (real > 0 > generated)."""
    spec = image_spec(config)
    image = model_input(spec)  # (B, H, W, C)
    x = rescale_pixels(image, spec)
    for i, filters in enumerate(config.discriminator_filters):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"down{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"down{i}_act")(x)  # (B, h/2, w/2, F)
    x = keras.layers.Flatten(name="flatten")(x)  # (B, D)
    x = MinibatchStdDev(name="minibatch_std")(x)  # (B, D + 1): lets it see a collapsed batch
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    logit = keras.layers.Dense(1, name="logit")(x)  # (B, 1)
    return keras.Model(image, logit, name="discriminator")


@keras.saving.register_keras_serializable(package="kerasops")
class AdversarialTrainer(keras.Model):
    """Trains a generator against a discriminator; `fit` on batches of (real images, labels).

    Args:
        generator: noise (B, latent_dim) -> images (B, H, W, C).
        discriminator: images -> logits (B, 1).
        latent_dim: the generator's noise size.
        label_smoothing: real images are labelled `1 - label_smoothing`.
        seed: seed of the noise drawn in each step.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        latent_dim: int,
        label_smoothing: float = 0.1,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.real_score_tracker = keras.metrics.Mean(name="d_real_accuracy")
        self.fake_score_tracker = keras.metrics.Mean(name="d_fake_accuracy")
        # Both networks are built models, so the trainer is too: a distributed `fit` would
        # otherwise build it symbolically by calling it on a batch of images, not noise.
        self.built = True

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return [
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.real_score_tracker,
            self.fake_score_tracker,
        ]

    def call(self, noise, training=False):
        return self.generator(noise, training=training)

    def train_step(self, data):
        real = data[0] if isinstance(data, tuple) else data  # (B, H, W, C)
        batch = ops.shape(real)[0]
        noise = keras.random.normal((batch, self.latent_dim), seed=self.noise_seed)  # (B, Z)
        with tf.GradientTape() as tape:
            fake = self.generator(noise, training=True)
            real_logits = self.discriminator(real, training=True)  # (B, 1)
            fake_logits = self.discriminator(fake, training=True)  # (B, 1)
            real_target = ops.ones_like(real_logits) * (1.0 - self.label_smoothing)
            d_loss = self._bce(real_target, real_logits) + self._bce(
                ops.zeros_like(fake_logits), fake_logits
            )
        weights = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights, strict=True))

        noise = keras.random.normal((batch, self.latent_dim), seed=self.noise_seed)
        with tf.GradientTape() as tape:
            fooled_logits = self.discriminator(self.generator(noise, training=True), training=True)
            g_loss = self._bce(ops.ones_like(fooled_logits), fooled_logits)  # non-saturating
        weights = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights, strict=True))

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.real_score_tracker.update_state(ops.cast(real_logits > 0, "float32"))
        self.fake_score_tracker.update_state(ops.cast(fake_logits < 0, "float32"))
        return {m.name: m.result() for m in self.metrics}

    @staticmethod
    def _bce(target, logits):
        return ops.mean(keras.losses.binary_crossentropy(target, logits, from_logits=True))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "latent_dim": self.latent_dim,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
