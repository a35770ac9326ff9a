"""BERT-style pretraining then fine-tuning: the encoder and its three models (`builder`), the
80/10/10 token masking (`masking`) and both training recipes (`recipe`), registered as
`bert_masked_lm` (pretraining) and `bert_classifier` (fine-tuning, or from scratch)."""

from kerasops.models.bert.builder import (
    BertClassifierConfig,
    BertMaskedLMConfig,
    build_bert_classifier,
    build_bert_masked_lm,
    build_text_encoder,
)
from kerasops.models.bert.recipe import BertClassifierRecipe, BertMaskedLMRecipe
from kerasops.models.family import ModelFamily

_TINY = {"embed_dim": 64, "num_heads": 4, "ff_dim": 128, "num_layers": 2}
_SMALL = {"embed_dim": 128, "num_heads": 4, "ff_dim": 256, "num_layers": 4}

# Presets by role and size.
MASKED_LM_PRESETS = {
    "bert_masked_lm_tiny": {**_TINY, "dropout": 0.1},
    "bert_masked_lm_small": {**_SMALL, "dropout": 0.1},
}
CLASSIFIER_PRESETS = {
    "bert_classifier_tiny": {**_TINY, "dropout": 0.1},
    "bert_classifier_small": {**_SMALL, "dropout": 0.1},
}

MASKED_LM_FAMILY = ModelFamily(
    BertMaskedLMConfig,
    build_bert_masked_lm,
    "BERT-style encoder pretrained by masked language modelling; serves text embeddings",
    MASKED_LM_PRESETS,
    BertMaskedLMRecipe(),
)
CLASSIFIER_FAMILY = ModelFamily(
    BertClassifierConfig,
    build_bert_classifier,
    "text classifier fine-tuned from a bert_masked_lm encoder (frozen, then unfrozen)",
    CLASSIFIER_PRESETS,
    BertClassifierRecipe(),
)

__all__ = [
    "CLASSIFIER_FAMILY",
    "MASKED_LM_FAMILY",
    "BertClassifierConfig",
    "BertMaskedLMConfig",
    "build_bert_classifier",
    "build_bert_masked_lm",
    "build_text_encoder",
]
