"""What a model needs to know about its data, and the preprocessing layers built from it.

`InputSpec` is filled from a prepared dataset at training time and stored inside every model
config, so a saved model carries everything needed to rebuild it (STYLE 7), and the exported
SavedModel takes raw values: pixels, strings, unscaled series (STYLE 5).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from kerasops.config import StrictConfig, require

Kind = Literal["image", "text", "timeseries", "tabular", "audio"]
Task = Literal[
    "classification",
    "regression",
    "language_modeling",
    "translation",
    "reconstruction",
    "generation",
    "detection",
    "segmentation",
]

INPUT_NAMES: dict[str, str] = {
    "image": "image",
    "text": "text",
    "timeseries": "series",
    "tabular": "features",
    "audio": "audio",  # float32 samples (B, samples) at `sample_rate`
}
OUTPUT_NAMES: dict[str, str] = {
    "classification": "probabilities",
    "regression": "forecast",
    "detection": "boxes",  # plus `classes`, `scores` and `num_detections`
    "segmentation": "mask",  # plus `probabilities`
    "language_modeling": "logits",
    "translation": "logits",
    "reconstruction": "reconstruction",
    "generation": "image",
}


@dataclasses.dataclass(frozen=True)
class InputSpec(StrictConfig):
    """The data-derived part of a model config.

    Args:
        kind: image, text, timeseries, tabular or audio.
        task: classification (softmax over `num_outputs` classes), regression
            (`num_outputs` values, e.g. the forecast horizon), language_modeling or translation
            (logits over `num_outputs` token ids at every position), reconstruction (an
            autoencoder gives back its input), generation (a generator makes inputs from
            noise), for those two `num_outputs` is the number of values per example, or
            detection (boxes of `num_outputs` classes) or segmentation (a class of
            `num_outputs`, background first, for every pixel).
        shape: per-example input shape; `()` for one string per example.
        num_outputs: number of classes, or of regression targets.
        pixel_max: images are rescaled by `1 / pixel_max` inside the model.
        mean, variance: per-feature statistics of the training split (series, tabular).
        vocabulary: text tokens of the training split, most frequent first.
        sequence_length: tokens kept per text example (the source side of a translation).
        target_length: token ids of a translation's target side, start token included.
        sample_rate: samples per second of an audio input.
    """

    kind: Kind
    task: Task
    shape: tuple[int, ...]
    num_outputs: int
    pixel_max: float = 255.0
    mean: tuple[float, ...] = ()
    variance: tuple[float, ...] = ()
    vocabulary: tuple[str, ...] = ()
    sequence_length: int = 0
    target_length: int = 0
    sample_rate: int = 0

    def validate(self) -> None:
        require(self.num_outputs >= 1, "inputs.num_outputs must be at least 1")
        require(self.pixel_max > 0, "inputs.pixel_max must be positive")
        if self.kind == "text":
            require(len(self.vocabulary) > 0, "inputs.vocabulary is empty for a text model")
            require(self.sequence_length > 0, "inputs.sequence_length must be positive")

    @property
    def input_name(self) -> str:
        return INPUT_NAMES[self.kind]

    @property
    def output_name(self) -> str:
        return OUTPUT_NAMES[self.task]


def require_inputs(spec: InputSpec | None, model: str, kinds: tuple[str, ...]) -> InputSpec:
    """Return `spec`, or raise ConfigError when it is missing or of a kind `model` cannot take."""
    require(spec is not None, f"{model}: config.inputs is not set (it comes from the dataset)")
    require(
        spec.kind in kinds,
        f"model {model!r} takes {' or '.join(kinds)} data, not {spec.kind} data",
    )
    return spec


def model_input(spec: InputSpec) -> keras.KerasTensor:
    """The named raw input: `image`, `text`, `series` or `features`."""
    if spec.kind == "text":
        return keras.Input(shape=(), dtype="string", name=spec.input_name)
    return keras.Input(shape=spec.shape, dtype="float32", name=spec.input_name)


def text_vectorizer(spec: InputSpec) -> keras.layers.TextVectorization:
    """Lower-case, strip punctuation, split, map to ids; 0 pads, 1 is out-of-vocabulary."""
    return keras.layers.TextVectorization(
        vocabulary=list(spec.vocabulary),
        output_mode="int",
        output_sequence_length=spec.sequence_length,
        name="vectorize",
    )


def vocabulary_size(spec: InputSpec) -> int:
    """Ids the vectorizer can emit: the vocabulary plus padding and out-of-vocabulary."""
    return len(spec.vocabulary) + 2


def normalizer(spec: InputSpec) -> keras.layers.Normalization:
    """Standardize features with the training split's statistics (kept in the model)."""
    require(len(spec.mean) > 0, "inputs.mean is empty: statistics come from the dataset")
    return keras.layers.Normalization(
        mean=list(spec.mean), variance=list(spec.variance), name="normalize"
    )


def rescale_pixels(x: keras.KerasTensor, spec: InputSpec) -> keras.KerasTensor:
    """Raw pixels in `[0, pixel_max]` to `[0, 1]`."""
    return keras.layers.Rescaling(1.0 / spec.pixel_max, name="rescale")(x)


def classification_head(x: keras.KerasTensor, spec: InputSpec) -> keras.KerasTensor:
    """Softmax over the classes, in float32 even under mixed precision."""
    return keras.layers.Dense(
        spec.num_outputs, activation="softmax", dtype="float32", name=spec.output_name
    )(x)
