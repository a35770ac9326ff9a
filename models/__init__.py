"""Keras architectures, one builder per family, and the registry that names them.

Importing this package registers the custom layers so saved models deserialize.
"""

from models import layers  # noqa: F401  (registers custom layers)
from models.config import ConfigError, KerasopsError, StrictConfig
from models.inputs import InputSpec
from models.registry import MODELS, PRESETS, build_model, get_family, preset_values

__all__ = [
    "MODELS",
    "PRESETS",
    "ConfigError",
    "InputSpec",
    "KerasopsError",
    "StrictConfig",
    "build_model",
    "get_family",
    "preset_values",
]
