"""The model registry: one line per family, mapping its name to the `ModelFamily` its module
declares (STYLE 2: registries are data). Adding a family is one module and one line here."""

from __future__ import annotations

from typing import Any

import keras

from kerasops.config import StrictConfig
from kerasops.data import Manifest
from kerasops.errors import ConfigError
from kerasops.models import (
    autoencoder,
    bert,
    cnn,
    detector,
    gan,
    keyword_spotter,
    language_model,
    mlp,
    rnn,
    segmenter,
    transfer,
    transformer,
    translator,
    vit,
)
from kerasops.models.family import ModelFamily

MODELS: dict[str, ModelFamily] = {
    "mlp": mlp.FAMILY,
    "cnn": cnn.FAMILY,
    "rnn": rnn.FAMILY,
    "transformer": transformer.FAMILY,
    "transfer": transfer.FAMILY,
    "detector": detector.FAMILY,
    "segmenter": segmenter.FAMILY,
    "keyword_spotter": keyword_spotter.FAMILY,
    "language_model": language_model.FAMILY,
    "translator": translator.FAMILY,
    "vit": vit.FAMILY,
    "autoencoder": autoencoder.FAMILY,
    "gan": gan.FAMILY,
    "bert_masked_lm": bert.MASKED_LM_FAMILY,
    "bert_classifier": bert.CLASSIFIER_FAMILY,
}

# Every preset by name, with the family it belongs to under `model`.
PRESETS: dict[str, dict[str, Any]] = {
    preset: {"model": name, **values}
    for name, family in MODELS.items()
    for preset, values in family.presets.items()
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
        known = sorted(get_family(model).presets)
        raise ConfigError(f"unknown preset {preset!r}; presets for {model}: {', '.join(known)}")
    values = dict(PRESETS[preset])
    owner = values.pop("model")
    if owner != model:
        raise ConfigError(f"preset {preset!r} is for model {owner!r}, not {model!r}")
    return values


def check_task(model: str, manifest: Manifest) -> None:
    """Raise ConfigError when family `model` does not train on the dataset's task, naming the
    families that do."""
    recipe = get_family(model).recipe
    if manifest.task in recipe.tasks:
        return
    trainers = [name for name, family in MODELS.items() if manifest.task in family.recipe.tasks]
    hint = f" (train the {' or '.join(trainers)} on it)" if trainers else ""
    raise ConfigError(recipe.wrong_task(manifest) + hint)


def build_model(name: str, config: StrictConfig | dict[str, Any]) -> keras.Model:
    """Build the uncompiled model `name` from a config object or a plain dict."""
    family = get_family(name)
    if isinstance(config, dict):
        config = family.config.from_dict(config)
    return family.build(config)
