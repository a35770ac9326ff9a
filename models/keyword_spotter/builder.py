"""The keyword spotter: raw waveforms in, its own audio front end inside the graph, then a CNN
or a recurrent stack, and a softmax over the keywords.

    audio (B, S) float32 samples at the dataset's sample rate
      -> MelSpectrogram (power, no batch-wide dB clipping) -> log -> per-clip normalization
      -> (B, T, M) log-mel frames
      -> cnn: conv blocks over (T, M, 1), global average pooling
         rnn: `cell` (simple, lstm, gru) layers over the T frames, optionally bidirectional
      -> probabilities (B, K)

Keras' `MelSpectrogram` can turn power into decibels itself, but its `top_db` floor is taken
from the maximum of the whole batch, so a clip's features would depend on the clips batched with
it; the log here is per value and the normalization per clip, so a served answer does not.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from kerasops.config import StrictConfig, require
from kerasops.models.inputs import InputSpec, classification_head, model_input, require_inputs

CELLS = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


@dataclasses.dataclass(frozen=True)
class KeywordSpotterConfig(StrictConfig):
    """A log-mel front end and a CNN or recurrent encoder.

    Args:
        inputs: filled from the dataset (an audio classification set).
        encoder: cnn (conv blocks over the spectrogram) or rnn (recurrent layers over frames).
        num_mel_bins: mel bands of the front end.
        fft_length: samples per STFT frame (512 at 16 kHz: 32 ms).
        frame_step: samples between frames (160 at 16 kHz: 10 ms).
        min_freq, max_freq: the mel bands' range in Hz (max 0: half the sample rate).
        filters: filters of each conv block (3x3 conv, batch norm, ReLU, 2x2 pooling), cnn only.
        cell: simple, lstm or gru, rnn only (as in the `rnn` family).
        units: width of each recurrent layer, rnn only.
        bidirectional: read the frames both ways, rnn only.
        dropout: dropout before the classifier.
        batchnorm_momentum: moving-statistics momentum of the conv blocks' batch norms (0.9:
            settled within the few hundred steps a small keyword set trains for).
    """

    inputs: InputSpec | None = None
    encoder: Literal["cnn", "rnn"] = "cnn"
    num_mel_bins: int = 40
    fft_length: int = 512
    frame_step: int = 160
    min_freq: float = 40.0
    max_freq: float = 0.0
    filters: tuple[int, ...] = (16, 32, 64)
    cell: Literal["simple", "lstm", "gru"] = "gru"
    units: tuple[int, ...] = (64,)
    bidirectional: bool = False
    dropout: float = 0.2
    batchnorm_momentum: float = 0.9

    def validate(self) -> None:
        require(self.num_mel_bins >= 4, "num_mel_bins must be at least 4")
        require(self.fft_length >= 16, "fft_length must be at least 16 samples")
        require(0 < self.frame_step <= self.fft_length, "frame_step must be in 1..fft_length")
        require(self.min_freq >= 0, "min_freq must be 0 or positive")
        require(
            self.max_freq == 0 or self.max_freq > self.min_freq,
            "max_freq must be 0 (half the sample rate) or above min_freq",
        )
        require(len(self.filters) > 0 and all(f > 0 for f in self.filters), "filters: positive")
        require(len(self.units) > 0 and all(u > 0 for u in self.units), "units: positive")
        require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        require(0.0 < self.batchnorm_momentum < 1.0, "batchnorm_momentum must be in (0, 1)")


@keras.saving.register_keras_serializable(package="kerasops")
class LogCompression(keras.layers.Layer):
    """`log(x + offset)` of a power spectrogram, value by value."""

    def __init__(self, offset: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, inputs):
        return keras.ops.log(keras.ops.cast(inputs, self.compute_dtype) + self.offset)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


def log_mel_frames(audio: keras.KerasTensor, spec: InputSpec, config: KeywordSpotterConfig):
    """The front end: samples (B, S) to normalized log-mel frames (B, T, M), in float32."""
    mel = keras.layers.MelSpectrogram(
        fft_length=config.fft_length,
        sequence_stride=config.frame_step,
        sampling_rate=spec.sample_rate,
        num_mel_bins=config.num_mel_bins,
        min_freq=config.min_freq,
        max_freq=config.max_freq or spec.sample_rate / 2,
        power_to_db=False,
        dtype="float32",
        name="mel_spectrogram",
    )(audio)  # (B, M, T)
    x = LogCompression(dtype="float32", name="log_mel")(mel)
    x = keras.layers.Permute((2, 1), dtype="float32", name="frames")(x)  # (B, T, M)
    return keras.layers.LayerNormalization(
        axis=[1, 2], center=False, scale=False, dtype="float32", name="per_clip_norm"
    )(x)


def cnn_encoder(frames: keras.KerasTensor, config: KeywordSpotterConfig) -> keras.KerasTensor:
    x = keras.layers.Reshape((*frames.shape[1:], 1), name="spectrogram_image")(frames)
    for i, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=config.batchnorm_momentum, name=f"conv{i}_bn")(
            x
        )
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"conv{i}_pool")(x)  # halves T, M
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)  # (B, F)


def rnn_encoder(frames: keras.KerasTensor, config: KeywordSpotterConfig) -> keras.KerasTensor:
    x = frames
    for i, units in enumerate(config.units):
        last = i == len(config.units) - 1
        layer = CELLS[config.cell](units, return_sequences=not last, name=f"{config.cell}_{i}")
        if config.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)  # (B, T, U) or, last, (B, U)
    return x


def build_keyword_spotter(config: KeywordSpotterConfig) -> keras.Model:
    """Return an uncompiled keyword spotter: raw `audio` samples in, `probabilities` out."""
    spec = require_inputs(config.inputs, "keyword_spotter", ("audio",))
    require(spec.task == "classification", "a keyword spotter is a classifier")
    require(len(spec.shape) == 1, f"keyword_spotter needs (samples,) clips, got {spec.shape}")
    require(spec.sample_rate > 0, "inputs.sample_rate is not set (it comes from the dataset)")
    require(
        spec.shape[0] >= config.fft_length,
        f"clips of {spec.shape[0]} samples are shorter than fft_length {config.fft_length}",
    )
    audio = model_input(spec)  # (B, S)
    frames = log_mel_frames(audio, spec, config)  # (B, T, M)
    encode = cnn_encoder if config.encoder == "cnn" else rnn_encoder
    x = encode(frames, config)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    return keras.Model(audio, classification_head(x, spec), name="keyword_spotter")
