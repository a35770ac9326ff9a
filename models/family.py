"""A model family: what one module declares and the registry names (STYLE 1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras

from kerasops.config import StrictConfig
from kerasops.models.recipe import Recipe


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """A family's config class, builder, presets (by role and size) and training recipe.

    Args:
        config: the frozen config class `build` takes (its `inputs` come from the dataset).
        build: returns the uncompiled functional model for a config.
        description: one line for `kerasops list`.
        presets: preset name -> config values, e.g. `{"cnn_small": {"filters": [32, 64]}}`.
        recipe: how the model is compiled, fitted, scored and served.
    """

    config: type[StrictConfig]
    build: Callable[[Any], keras.Model]
    description: str
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
