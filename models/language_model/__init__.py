"""The decoder-only character language model: builder and text generator (`builder`), unigram
baseline (`metrics`) and training recipe (`recipe`), registered as `language_model`."""

from kerasops.models.family import ModelFamily
from kerasops.models.language_model.builder import (
    LanguageModelConfig,
    build_language_model,
    build_text_generator,
)
from kerasops.models.language_model.recipe import LanguageModelRecipe

# Presets by role and size.
PRESETS = {
    "language_model_tiny": {
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "num_layers": 2,
        "dropout": 0.0,
    },
    "language_model_small": {
        "embed_dim": 128,
        "num_heads": 4,
        "ff_dim": 512,
        "num_layers": 4,
        "dropout": 0.1,
    },
}

FAMILY = ModelFamily(
    LanguageModelConfig,
    build_language_model,
    "decoder-only Transformer character language model; serves text generation",
    PRESETS,
    LanguageModelRecipe(),
)

__all__ = [
    "FAMILY",
    "PRESETS",
    "LanguageModelConfig",
    "build_language_model",
    "build_text_generator",
]
