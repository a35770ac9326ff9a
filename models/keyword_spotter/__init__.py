"""The keyword spotter: builder with its own log-mel front end (`builder`), accuracy and macro F1
on the test split and the unseen voice (`metrics`) and its training recipe (`recipe`),
registered as the `keyword_spotter` family."""

from kerasops.models.family import ModelFamily
from kerasops.models.keyword_spotter.builder import KeywordSpotterConfig, build_keyword_spotter
from kerasops.models.keyword_spotter.recipe import KeywordSpottingRecipe

# Presets by role and size.
PRESETS = {
    "keyword_spotter_tiny": {"encoder": "cnn", "filters": [12, 24, 48], "num_mel_bins": 32},
    "keyword_spotter_small": {"encoder": "cnn", "filters": [16, 32, 64]},
    "keyword_spotter_bigru_small": {
        "encoder": "rnn",
        "cell": "gru",
        "units": [48],
        "bidirectional": True,
    },
}

FAMILY = ModelFamily(
    KeywordSpotterConfig,
    build_keyword_spotter,
    "keyword spotter: raw 16 kHz audio, log-mel front end in the graph, CNN or (bi)LSTM/GRU",
    PRESETS,
    KeywordSpottingRecipe(),
)

__all__ = ["FAMILY", "PRESETS", "KeywordSpotterConfig", "build_keyword_spotter"]
