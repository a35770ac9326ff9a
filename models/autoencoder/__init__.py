"""Autoencoders for reconstruction, denoising and anomaly scoring: builder (`builder`), scores
(`metrics`) and training recipe (`recipe`), registered as the `autoencoder` family."""

from kerasops.models.autoencoder.builder import (
    AutoencoderConfig,
    build_anomaly_scorer,
    build_autoencoder,
)
from kerasops.models.autoencoder.recipe import AutoencoderRecipe
from kerasops.models.family import ModelFamily

# Presets by architecture, role and size.
PRESETS = {
    "autoencoder_dense_small": {
        "architecture": "dense",
        "hidden_units": [128, 64],
        "bottleneck": 16,
    },
    "autoencoder_conv_small": {"architecture": "conv", "filters": [16, 32], "bottleneck": 16},
    "autoencoder_denoise_small": {
        "architecture": "conv",
        "filters": [16, 32],
        "bottleneck": 32,
        "mode": "denoise",
        "noise_stddev": 0.2,
    },
}

FAMILY = ModelFamily(
    AutoencoderConfig,
    build_autoencoder,
    "dense/conv autoencoder; denoising and anomaly scoring",
    PRESETS,
    AutoencoderRecipe(),
)

__all__ = ["FAMILY", "PRESETS", "AutoencoderConfig", "build_anomaly_scorer", "build_autoencoder"]
