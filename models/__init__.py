"""Keras architectures: one module (or package) per family with its builder, presets and
training recipe, and the registry that names them.

Importing this package registers the custom layers so saved models deserialize. It imports
neither MLflow nor Prefect.
"""

from kerasops.models import layers  # noqa: F401  (registers custom layers)
from kerasops.models.family import ModelFamily
from kerasops.models.inputs import InputSpec
from kerasops.models.registry import (
    MODELS,
    PRESETS,
    build_model,
    check_task,
    get_family,
    preset_values,
)

__all__ = [
    "MODELS",
    "PRESETS",
    "InputSpec",
    "ModelFamily",
    "build_model",
    "check_task",
    "get_family",
    "preset_values",
]
