"""The DCGAN image generator: generator, discriminator and adversarial trainer (`builder`),
scores (`metrics`) and training recipe (`recipe`), registered as the `gan` family."""

from kerasops.models.family import ModelFamily
from kerasops.models.gan.builder import (
    AdversarialTrainer,
    GanConfig,
    build_discriminator,
    build_gan,
)
from kerasops.models.gan.recipe import GanRecipe

# Presets by role and size.
PRESETS = {
    "gan_small": {
        "latent_dim": 32,
        "generator_filters": [64, 32],
        "discriminator_filters": [32, 64],
        "dropout": 0.0,
        "label_smoothing": 0.0,
    },
}

FAMILY = ModelFamily(
    GanConfig, build_gan, "DCGAN image generator (noise -> image)", PRESETS, GanRecipe()
)

__all__ = [
    "FAMILY",
    "PRESETS",
    "AdversarialTrainer",
    "GanConfig",
    "build_discriminator",
    "build_gan",
]
