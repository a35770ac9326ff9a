"""The model registry: names to (config class, builder), and presets by role and size.

Registries are data (STYLE 2): adding a family is one entry here and one module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras

from models.autoencoder import AutoencoderConfig, build_autoencoder
from models.cnn import CnnConfig, build_cnn
from models.config import ConfigError, StrictConfig
from models.detection import DetectorConfig, build_detector
from models.gan import GanConfig, build_gan
from models.language_model import LanguageModelConfig, build_language_model
from models.mlp import MlpConfig, build_mlp
from models.rnn import RnnConfig, build_rnn
from models.transfer import TransferConfig, build_transfer
from models.transformer import TransformerConfig, build_transformer
from models.translation import TranslatorConfig, build_translator
from models.vit import VitConfig, build_vit


class ModelFamily(NamedTuple):
    """A family: its config class, its builder, and the name of the training recipe it needs.

    `recipe` names an entry of `pipelines.recipes.RECIPES` (how to compile, fit and evaluate);
    models/ stays free of training code, so it is referred to by name only.
    """

    config: type[StrictConfig]
    build: Callable[[Any], keras.Model]
    description: str
    recipe: str = "standard"


MODELS: dict[str, ModelFamily] = {
    "mlp": ModelFamily(MlpConfig, build_mlp, "dense stack for tabular rows"),
    "cnn": ModelFamily(CnnConfig, build_cnn, "conv/batch-norm/pooling image classifier"),
    "rnn": ModelFamily(RnnConfig, build_rnn, "SimpleRNN/LSTM/GRU text classifier or forecaster"),
    "transformer": ModelFamily(
        TransformerConfig, build_transformer, "Transformer encoder text classifier"
    ),
    "transfer": ModelFamily(
        TransferConfig,
        build_transfer,
        "ImageNet backbone (Keras Applications) + head, frozen then fine-tuned",
        recipe="transfer",
    ),
    "detector": ModelFamily(
        DetectorConfig,
        build_detector,
        "single-shot grid detector: boxes, classes and scores after non-max suppression",
        recipe="detection",
    ),
    "language_model": ModelFamily(
        LanguageModelConfig,
        build_language_model,
        "decoder-only Transformer character language model; serves text generation",
        recipe="language_model",
    ),
    "translator": ModelFamily(
        TranslatorConfig,
        build_translator,
        "encoder-decoder Transformer translating character sequences, greedy decoding",
        recipe="translation",
    ),
    "vit": ModelFamily(VitConfig, build_vit, "Vision Transformer image classifier (patches)"),
    "autoencoder": ModelFamily(
        AutoencoderConfig,
        build_autoencoder,
        "dense/conv autoencoder; denoising and anomaly scoring",
        recipe="autoencoder",
    ),
    "gan": ModelFamily(GanConfig, build_gan, "DCGAN image generator (noise -> image)", "gan"),
}

# Presets are plain data, named by role and size. `model` says which family they belong to.
PRESETS: dict[str, dict[str, Any]] = {
    "mlp_small": {"model": "mlp", "hidden_units": [64, 32], "dropout": 0.1},
    "mlp_base": {"model": "mlp", "hidden_units": [256, 128, 64], "dropout": 0.3},
    "cnn_small": {"model": "cnn", "filters": [32, 64], "dense_units": 64, "dropout": 0.3},
    "cnn_base": {"model": "cnn", "filters": [32, 64, 128], "dense_units": 128, "dropout": 0.4},
    "rnn_lstm_small": {"model": "rnn", "cell": "lstm", "units": [32]},
    "rnn_gru_small": {"model": "rnn", "cell": "gru", "units": [32]},
    "rnn_bilstm_base": {"model": "rnn", "cell": "lstm", "units": [64, 32], "bidirectional": True},
    "rnn_simple_small": {"model": "rnn", "cell": "simple", "units": [32]},
    "transformer_tiny": {
        "model": "transformer",
        "embed_dim": 32,
        "num_heads": 2,
        "ff_dim": 64,
        "num_layers": 1,
    },
    "transformer_small": {
        "model": "transformer",
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "num_layers": 2,
    },
    "transfer_mobilenet_small": {
        "model": "transfer",
        "backbone": "mobilenet_v2",
        "image_size": 96,
        "head_dropout": 0.2,
        "fine_tune_layers": 30,
    },
    "transfer_efficientnet_base": {
        "model": "transfer",
        "backbone": "efficientnet_b0",
        "image_size": 224,
        "augmentation": ["rotation", "zoom"],
        "head_dropout": 0.3,
        "fine_tune_layers": 40,
    },
    "transfer_resnet_base": {
        "model": "transfer",
        "backbone": "resnet50",
        "image_size": 224,
        "head_dropout": 0.3,
        "fine_tune_layers": 30,
    },
    "transfer_vgg_base": {
        "model": "transfer",
        "backbone": "vgg16",
        "image_size": 224,
        "head_units": 256,
        "head_dropout": 0.5,
        "fine_tune_layers": 4,
    },
    "transfer_inception_base": {
        "model": "transfer",
        "backbone": "inception_v3",
        "image_size": 299,
        "head_dropout": 0.3,
        "fine_tune_layers": 60,
    },
    "detector_tiny": {"model": "detector", "filters": [8, 16, 32], "head_filters": 32},
    "detector_small": {"model": "detector", "filters": [16, 32, 64], "head_filters": 64},
    "language_model_tiny": {
        "model": "language_model",
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "num_layers": 2,
        "dropout": 0.0,
    },
    "language_model_small": {
        "model": "language_model",
        "embed_dim": 128,
        "num_heads": 4,
        "ff_dim": 512,
        "num_layers": 4,
        "dropout": 0.1,
    },
    "translator_tiny": {
        "model": "translator",
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "dropout": 0.0,
    },
    "translator_small": {
        "model": "translator",
        "embed_dim": 128,
        "num_heads": 4,
        "ff_dim": 256,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "dropout": 0.1,
    },
    "vit_tiny": {
        "model": "vit",
        "patch_size": 2,
        "embed_dim": 32,
        "num_heads": 2,
        "ff_dim": 64,
        "num_layers": 2,
    },
    "vit_small": {
        "model": "vit",
        "patch_size": 2,
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "num_layers": 4,
    },
    "autoencoder_dense_small": {
        "model": "autoencoder",
        "architecture": "dense",
        "hidden_units": [128, 64],
        "bottleneck": 16,
    },
    "autoencoder_conv_small": {
        "model": "autoencoder",
        "architecture": "conv",
        "filters": [16, 32],
        "bottleneck": 16,
    },
    "autoencoder_denoise_small": {
        "model": "autoencoder",
        "architecture": "conv",
        "filters": [16, 32],
        "bottleneck": 32,
        "mode": "denoise",
        "noise_stddev": 0.2,
    },
    "gan_small": {
        "model": "gan",
        "latent_dim": 32,
        "generator_filters": [64, 32],
        "discriminator_filters": [32, 64],
        "dropout": 0.0,
        "label_smoothing": 0.0,
    },
}


def get_family(name: str) -> ModelFamily:
    """Return the family registered as `name`, or raise ConfigError listing the known ones."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def preset_values(model: str, preset: str | None) -> dict[str, Any]:
    """Return the preset's config values (without `model`), checking it belongs to `model`."""
    if preset is None:
        return {}
    if preset not in PRESETS:
        known = sorted(p for p, v in PRESETS.items() if v["model"] == model)
        raise ConfigError(f"unknown preset {preset!r}; presets for {model}: {', '.join(known)}")
    values = dict(PRESETS[preset])
    owner = values.pop("model")
    if owner != model:
        raise ConfigError(f"preset {preset!r} is for model {owner!r}, not {model!r}")
    return values


def build_model(name: str, config: StrictConfig | dict[str, Any]) -> keras.Model:
    """Build the uncompiled model `name` from a config object or a plain dict."""
    family = get_family(name)
    if isinstance(config, dict):
        config = family.config.from_dict(config)
    return family.build(config)
