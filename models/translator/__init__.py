"""The encoder-decoder character translator: builder and greedy decoder (`builder`), BLEU and
exact match (`metrics`) and training recipe (`recipe`), registered as `translator`."""

from kerasops.models.family import ModelFamily
from kerasops.models.translator.builder import (
    TranslatorConfig,
    build_greedy_translator,
    build_translator,
)
from kerasops.models.translator.recipe import TranslationRecipe

# Presets by role and size.
PRESETS = {
    "translator_tiny": {
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "dropout": 0.0,
    },
    "translator_small": {
        "embed_dim": 128,
        "num_heads": 4,
        "ff_dim": 256,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "dropout": 0.1,
    },
}

FAMILY = ModelFamily(
    TranslatorConfig,
    build_translator,
    "encoder-decoder Transformer translating character sequences, greedy decoding",
    PRESETS,
    TranslationRecipe(),
)

__all__ = ["FAMILY", "PRESETS", "TranslatorConfig", "build_greedy_translator", "build_translator"]
