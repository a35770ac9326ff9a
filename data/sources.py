"""Dataset sources: one strict config per source, and a registry from source name to loader.

A params.yaml `datasets:` entry names its `source`; the rest of the entry is that source's config.
Built-in sources write their raw files in a user format first, then load them exactly as the
user's own files are loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kerasops.config import StrictConfig, require
from kerasops.data import audio, detection, materialize, readers, segmentation
from kerasops.data.errors import DataError
from kerasops.data.image_folder import ImageFolderPlan, plan_image_folder
from kerasops.data.readers import LabeledExamples
from kerasops.data.splits import random_split, series_periods, stratified_split, window_series
from kerasops.errors import ConfigError

Kind = Literal["image", "text", "timeseries", "tabular", "audio"]
Task = Literal[
    "classification", "regression", "language_modeling", "translation", "detection", "segmentation"
]
Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split name -> (x, y)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceConfig(StrictConfig):
    """Fields every source shares: the held-out fractions and the split seed."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    shard_size_mb: float = 128.0  # prepared splits are TFRecord shards of about this size

    def validate(self) -> None:
        require(self.shard_size_mb > 0, f"shard_size_mb must be positive, got {self.shard_size_mb}")
        require(
            0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"
        )
        require(
            0 <= self.test_fraction < 1,
            f"test_fraction must be in [0, 1), got {self.test_fraction}",
        )
        require(
            self.val_fraction + self.test_fraction < 1,
            "val_fraction + test_fraction must be below 1 to leave training data",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesConfig(SourceConfig):
    """A series cut into windows of `window` inputs and `horizon` targets.

    The split is chronological, so `seed` has no effect on it.
    """

    window: int = 20
    horizon: int = 1

    def validate(self) -> None:
        super().validate()
        require(self.window >= 1, f"window must be at least 1, got {self.window}")
        require(self.horizon >= 1, f"horizon must be at least 1, got {self.horizon}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SklearnDigitsConfig(SourceConfig):
    source: Literal["sklearn_digits"] = "sklearn_digits"


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasMnistConfig(SourceConfig):
    source: Literal["keras_mnist"] = "keras_mnist"
    path: str | None = None  # a local copy of keras' mnist.npz; None: keras' cache or download


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageFolderConfig(SourceConfig):
    source: Literal["image_folder"] = "image_folder"
    path: str  # a folder of class subfolders; relative to raw_root unless absolute
    # (height, width); images of another size are resized. Typed `tuple[int, ...]` with the length
    # checked in `validate`, because models.config.coerce swaps item and type for fixed tuples.
    image_size: tuple[int, ...]
    color_mode: Literal["grayscale", "rgb"] = "rgb"
    skip_corrupt: bool = False  # true: unreadable files are left out and listed in the manifest

    def validate(self) -> None:
        super().validate()
        require(
            len(self.image_size) == 2 and min(self.image_size) >= 1,
            f"image_size must be [height, width], both positive; got {list(self.image_size)}",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BbcNewsConfig(SourceConfig):
    source: Literal["bbc_news"] = "bbc_news"
    drop_duplicates: bool = True  # the corpus repeats 98 of its 2,225 articles verbatim


@dataclasses.dataclass(frozen=True, kw_only=True)
class KerasImdbConfig(SourceConfig):
    source: Literal["keras_imdb"] = "keras_imdb"
    path: str | None = None  # a local copy of keras' imdb.npz; None: keras' cache or download
    word_index_path: str | None = None  # default: imdb_word_index.json beside `path`


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextCsvConfig(SourceConfig):
    source: Literal["text_csv"] = "text_csv"
    path: str  # a CSV with `text` and `label` columns; relative to raw_root unless absolute
    drop_duplicates: bool = False  # keep each identical text once, before splitting


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatsmodelsSunspotsConfig(SeriesConfig):
    source: Literal["statsmodels_sunspots"] = "statsmodels_sunspots"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimeseriesCsvConfig(SeriesConfig):
    source: Literal["timeseries_csv"] = "timeseries_csv"
    path: str  # relative to raw_root unless absolute
    value_column: str
    time_column: str | None = None  # rows are sorted by it when given


@dataclasses.dataclass(frozen=True, kw_only=True)
class SklearnBreastCancerConfig(SourceConfig):
    source: Literal["sklearn_breast_cancer"] = "sklearn_breast_cancer"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TabularCsvConfig(SourceConfig):
    source: Literal["tabular_csv"] = "tabular_csv"
    path: str  # numeric feature columns and a label column; relative to raw_root unless absolute
    label_column: str = "label"
    task: Literal["classification", "regression"] = "classification"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LanguageModelingConfig(SourceConfig):
    """Documents cut into next-character windows (x: `window` characters, y: the same window
    one character later). Runs of whitespace become one space; exact duplicate documents are
    kept once, and the split is by document, so no document's text is in two splits.
    """

    window: int = 128  # characters of context per example
    stride: int = 0  # characters between window starts; 0: `window` (no overlap)
    max_documents: int = 0  # 0: every document; fewer (a seeded sample) for quick runs
    lowercase: bool = False

    def validate(self) -> None:
        super().validate()
        require(self.window >= 2, f"window must be at least 2, got {self.window}")
        require(self.stride >= 0, f"stride must be >= 0 (0: the window), got {self.stride}")
        require(self.max_documents >= 0, f"max_documents must be >= 0, got {self.max_documents}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BbcNewsLmConfig(LanguageModelingConfig):
    source: Literal["bbc_news_lm"] = "bbc_news_lm"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextCorpusConfig(LanguageModelingConfig):
    source: Literal["text_corpus"] = "text_corpus"
    path: (
        str  # a .txt file or a folder of .txt files (one document each); under raw_root if relative
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TranslationCsvConfig(SourceConfig):
    source: Literal["translation_csv"] = "translation_csv"
    path: str  # a CSV of source and target text; relative to raw_root unless absolute
    source_column: str = "source"
    target_column: str = "target"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratedDatesConfig(SourceConfig):
    """Dates in eleven human formats translated to ISO 8601 (see data/dates.py)."""

    source: Literal["generated_dates"] = "generated_dates"
    examples: int = 20000
    first_year: int = 1950
    last_year: int = 2049
    generation_seed: int = 7  # which pairs are drawn; `seed` only splits them


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectionCsvConfig(SourceConfig):
    """Boxes listed in a CSV `image,label,ymin,xmin,ymax,xmax` (pixels, max exclusive)."""

    source: Literal["detection_csv"] = "detection_csv"
    path: str  # the annotations CSV; image paths in it are relative to its folder
    image_size: tuple[int, ...]  # (height, width); boxes are kept as fractions of the image
    color_mode: Literal["grayscale", "rgb"] = "grayscale"
    max_objects: int = 3  # boxes per image; targets are padded to this many rows

    def validate(self) -> None:
        super().validate()
        require(
            len(self.image_size) == 2 and min(self.image_size) >= 1,
            f"image_size must be [height, width], both positive; got {list(self.image_size)}",
        )
        require(self.max_objects >= 1, f"max_objects must be at least 1, got {self.max_objects}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigitsDetectionConfig(SourceConfig):
    """sklearn digits pasted at random non-overlapping places on blank square canvases."""

    source: Literal["digits_detection"] = "digits_detection"
    num_images: int = 1500
    canvas_size: int = 48
    min_object_size: int = 12  # digit side in pixels, drawn uniformly per object
    max_object_size: int = 20
    max_objects: int = 3  # each canvas holds 1..max_objects digits
    canvas_seed: int = 0  # seeds the drawing; `seed` seeds the split

    def validate(self) -> None:
        super().validate()
        require(self.num_images >= 10, f"num_images must be at least 10, got {self.num_images}")
        require(self.max_objects >= 1, f"max_objects must be at least 1, got {self.max_objects}")
        require(
            4 <= self.min_object_size <= self.max_object_size <= self.canvas_size,
            "need 4 <= min_object_size <= max_object_size <= canvas_size",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentationFolderConfig(SourceConfig):
    """Images in `<path>/images/` and their masks `<path>/masks/<same name>.png` (class ids)."""

    source: Literal["segmentation_folder"] = "segmentation_folder"
    path: str  # the folder holding images/ and masks/; relative to raw_root unless absolute
    image_size: tuple[int, ...]  # (height, width); masks are resized by nearest pixel
    classes: tuple[str, ...]  # class names by mask id; id 0 is the background
    color_mode: Literal["grayscale", "rgb"] = "grayscale"

    def validate(self) -> None:
        super().validate()
        require(
            len(self.image_size) == 2 and min(self.image_size) >= 1,
            f"image_size must be [height, width], both positive; got {list(self.image_size)}",
        )
        require(
            len(self.classes) >= 2 and len(set(self.classes)) == len(self.classes),
            f"classes must name at least two distinct classes, background first; "
            f"got {list(self.classes)}",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigitsSegmentationConfig(SourceConfig):
    """sklearn digits pasted on blank canvases, with a mask of each digit's ink (digit + 1)."""

    source: Literal["digits_segmentation"] = "digits_segmentation"
    num_images: int = 1000
    canvas_size: int = 48
    min_object_size: int = 12  # digit side in pixels, drawn uniformly per object
    max_object_size: int = 20
    max_objects: int = 3  # each canvas holds 1..max_objects digits
    canvas_seed: int = 0  # seeds the drawing; `seed` seeds the split

    def validate(self) -> None:
        super().validate()
        require(self.num_images >= 10, f"num_images must be at least 10, got {self.num_images}")
        require(self.max_objects >= 1, f"max_objects must be at least 1, got {self.max_objects}")
        require(
            4 <= self.min_object_size <= self.max_object_size <= self.canvas_size,
            "need 4 <= min_object_size <= max_object_size <= canvas_size",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AudioFolderConfig(SourceConfig):
    """WAV clips in class folders `<path>/<class>/<clip>.wav` (rules in data/audio.py)."""

    source: Literal["audio_folder"] = "audio_folder"
    path: str  # a folder of class subfolders; relative to raw_root unless absolute
    sample_rate: int = audio.SAMPLE_RATE  # clips of another rate are resampled to it
    clip_seconds: float = 1.0  # shorter clips are padded with silence, longer ones refused
    # a second folder of the same classes, e.g. a speaker never heard in training: the
    # prepared `unseen_voice` split, scored beside the test split
    unseen_voice_path: str | None = None

    def validate(self) -> None:
        super().validate()
        require(
            1000 <= self.sample_rate <= 96000,
            f"sample_rate must be in 1000..96000 Hz, got {self.sample_rate}",
        )
        require(
            0 < self.clip_seconds <= 30, f"clip_seconds must be in (0, 30], got {self.clip_seconds}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpeechCommandsConfig(SourceConfig):
    """Keywords spoken offline by espeak-ng in many voices, speeds and pitches, with noise; one
    voice held out as the `unseen_voice` split (data/audio.py)."""

    source: Literal["speech_commands"] = "speech_commands"
    words: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    voices: tuple[str, ...] = (
        "en+m1",
        "en+m3",
        "en+f1",
        "en+f3",
        "en-us+m2",
        "en-us+f4",
        "en-gb-scotland+m4",
        "en-029+f2",
    )
    unseen_voice: str = "en-us+m7"
    speeds: tuple[int, ...] = (120, 150, 180, 210)  # words per minute
    pitches: tuple[int, ...] = (25, 40, 55, 70)  # espeak-ng's 0..99
    takes: int = 4  # clips per word and voice
    noise_snr_db: tuple[float, ...] = (10.0, 30.0)  # [low, high] background noise SNR
    generation_seed: int = 0  # which speed, pitch, offset and noise each take gets
    sample_rate: int = audio.SAMPLE_RATE

    def validate(self) -> None:
        super().validate()
        require(len(self.words) >= 2, f"words needs at least two keywords, got {list(self.words)}")
        require(len(set(self.words)) == len(self.words), "words must be distinct")
        require(
            all(w.isalpha() for w in self.words),
            f"words must be plain words (letters only), got {list(self.words)}",
        )
        require(len(self.voices) >= 1, "voices needs at least one espeak-ng voice")
        require(
            self.unseen_voice not in self.voices,
            f"unseen_voice {self.unseen_voice!r} is also in voices; hold it out of them",
        )
        require(self.takes >= 1, f"takes must be at least 1, got {self.takes}")
        require(
            len(self.speeds) >= 1 and all(80 <= s <= 450 for s in self.speeds),
            "speeds must be espeak-ng words per minute in 80..450",
        )
        require(
            len(self.pitches) >= 1 and all(0 <= p <= 99 for p in self.pitches),
            "pitches must be in 0..99",
        )
        require(
            len(self.noise_snr_db) == 2 and self.noise_snr_db[0] <= self.noise_snr_db[1],
            f"noise_snr_db must be [low, high], got {list(self.noise_snr_db)}",
        )
        require(
            8000 <= self.sample_rate <= 48000,
            f"sample_rate must be in 8000..48000 Hz, got {self.sample_rate}",
        )


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
    """A source's examples, already split: splits[name] = (x, y)."""

    kind: Kind
    task: Task
    input_dtype: Literal["float32", "string"]
    classes: tuple[str, ...]
    splits: Splits
    stats: dict[str, float]
    feature_names: tuple[str, ...] = ()  # a table's columns, in the order of x's last axis


def _classified(
    examples: LabeledExamples,
    config: SourceConfig,
    kind: Kind,
    stats: Callable[[Splits], dict[str, float]],
) -> LoadedDataset:
    classes = tuple(sorted(set(examples.labels.tolist())))
    if len(classes) < 2:
        raise DataError(f"found only the class {classes!r}; a classifier needs at least two")
    y = np.searchsorted(np.array(classes), examples.labels).astype(np.int32)  # (N,) class index
    indices = stratified_split(y, config.val_fraction, config.test_fraction, config.seed)
    splits = {s: (examples.x[i], y[i]) for s, i in indices.items()}
    dtype = "string" if examples.x.dtype == object else "float32"
    return LoadedDataset(kind, "classification", dtype, classes, splits, stats(splits))


def _image_stats(splits: Splits) -> dict[str, float]:
    train = splits["train"][0]
    every = [x.max() for x, _ in splits.values() if x.size]
    return {
        "pixel_max": float(max(every)),
        "pixel_mean": float(train.mean()),
        "pixel_std": float(train.std()),
    }


def _text_stats(splits: Splits) -> dict[str, float]:
    words = np.array([len(t.split()) for t in splits["train"][0]])
    return {"train_words_mean": float(words.mean()), "train_words_max": float(words.max())}


def _no_stats(splits: Splits) -> dict[str, float]:
    return {}


# Loaders: (config, raw_root, dataset name) -> LoadedDataset.


def load_image_folder(config: ImageFolderConfig, raw_root: Path, name: str) -> ImageFolderPlan:
    """List and split the folder; its images are decoded while the shards are written."""
    folder = readers.resolve_path(config.path, raw_root)
    files, skipped = readers.image_files(folder, skip_other=config.skip_corrupt)
    size = (int(config.image_size[0]), int(config.image_size[1]))
    plan = plan_image_folder(
        folder, files, size, config.color_mode, _split_fields(config), config.skip_corrupt
    )
    return dataclasses.replace(plan, skipped=tuple(skipped))


def load_text_csv(config: TextCsvConfig, raw_root: Path, name: str) -> LoadedDataset:
    examples = readers.read_text_csv(readers.resolve_path(config.path, raw_root))
    if not config.drop_duplicates:
        return _classified(examples, config, "text", _text_stats)
    unique, dropped = drop_duplicate_texts(examples)
    return _classified(
        unique, config, "text", lambda s: {**_text_stats(s), "duplicates_dropped": float(dropped)}
    )


def drop_duplicate_texts(examples: LabeledExamples) -> tuple[LabeledExamples, int]:
    """Each identical text once (its first row, in file order), and how many rows were dropped.

    A text given two different labels is an error naming it: which label is right is the
    user's call.
    """
    first_label: dict[str, str] = {}
    keep = []
    texts, labels = map(str, examples.x), map(str, examples.labels)
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if text not in first_label:
            first_label[text] = label
            keep.append(index)
        elif first_label[text] != label:
            raise DataError(
                f"the text {text[:60]!r} appears with labels {first_label[text]!r} and {label!r}; "
                "fix its label or set drop_duplicates: false"
            )
    rows = np.asarray(keep, dtype=np.int64)
    return LabeledExamples(examples.x[rows], examples.labels[rows]), len(examples.x) - len(rows)


def load_timeseries_csv(config: TimeseriesCsvConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = readers.resolve_path(config.path, raw_root)
    values = readers.read_series_csv(path, config.value_column, config.time_column)  # (T,)
    splits = window_series(
        values, config.window, config.horizon, config.val_fraction, config.test_fraction
    )
    _, n_train = series_periods(len(values), config.val_fraction, config.test_fraction)["train"]
    stats = {
        "train_mean": float(values[:n_train].mean()),
        "train_std": float(values[:n_train].std()),
        "observations": float(len(values)),
    }
    return LoadedDataset("timeseries", "regression", "float32", (), splits, stats)


def load_tabular_csv(config: TabularCsvConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = readers.resolve_path(config.path, raw_root)
    examples, features = readers.read_tabular_csv(path, config.label_column)
    if config.task == "classification":
        loaded = _classified(examples, config, "tabular", _no_stats)
        return dataclasses.replace(loaded, feature_names=tuple(features))
    y = np.array(
        [readers.to_number(v, path, i, config.label_column) for i, v in enumerate(examples.labels)],
        dtype=np.float32,
    )  # (N,) regression targets
    indices = random_split(len(y), config.val_fraction, config.test_fraction, config.seed)
    splits = {s: (examples.x[i], y[i]) for s, i in indices.items()}
    return LoadedDataset(
        "tabular", "regression", "float32", (), splits, {}, feature_names=tuple(features)
    )


def load_detection_csv(config: DetectionCsvConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = readers.resolve_path(config.path, raw_root)
    size = (int(config.image_size[0]), int(config.image_size[1]))
    examples = detection.read_detection_csv(path, size, config.color_mode, config.max_objects)
    indices = random_split(len(examples.y), config.val_fraction, config.test_fraction, config.seed)
    splits = {s: (examples.x[i], examples.y[i]) for s, i in indices.items()}
    stats = _image_stats(splits)
    stats["objects_per_image"] = float((examples.y[..., 4] >= 0).sum(axis=1).mean())
    return LoadedDataset("image", "detection", "float32", examples.classes, splits, stats)


def load_segmentation_folder(
    config: SegmentationFolderConfig, raw_root: Path, name: str
) -> LoadedDataset:
    folder = readers.resolve_path(config.path, raw_root)
    size = (int(config.image_size[0]), int(config.image_size[1]))
    examples = segmentation.read_mask_folder(folder, size, config.color_mode, config.classes)
    indices = random_split(len(examples.y), config.val_fraction, config.test_fraction, config.seed)
    splits = {s: (examples.x[i], examples.y[i]) for s, i in indices.items()}
    stats = _image_stats(splits)
    stats["foreground_fraction"] = float((examples.y > 0).mean())
    return LoadedDataset("image", "segmentation", "float32", examples.classes, splits, stats)


def load_digits_segmentation(
    config: DigitsSegmentationConfig, raw_root: Path, name: str
) -> LoadedDataset:
    spec = detection.CanvasSpec(
        num_images=config.num_images,
        canvas_size=config.canvas_size,
        min_object_size=config.min_object_size,
        max_object_size=config.max_object_size,
        max_objects=config.max_objects,
        seed=config.canvas_seed,
    )
    folder = segmentation.materialize_segmentation_digits(Path(raw_root) / name, spec)
    user = SegmentationFolderConfig(
        path=str(folder.resolve()),
        image_size=(config.canvas_size, config.canvas_size),
        classes=segmentation.digit_classes(),
        **_split_fields(config),
    )
    return load_segmentation_folder(user, raw_root, name)


def load_audio_folder(
    config: AudioFolderConfig, raw_root: Path, name: str
) -> audio.AudioFolderPlan:
    """List and split the folder (and the held-out folder); its clips are read while the shards
    are written."""
    folder = readers.resolve_path(config.path, raw_root)
    unseen = config.unseen_voice_path
    return audio.plan_audio_folder(
        folder,
        config.sample_rate,
        config.clip_seconds,
        _split_fields(config),
        None if unseen is None else readers.resolve_path(unseen, raw_root),
    )


def load_speech_commands(
    config: SpeechCommandsConfig, raw_root: Path, name: str
) -> audio.AudioFolderPlan:
    spec = audio.SpeechSpec(
        words=tuple(config.words),
        voices=tuple(config.voices),
        unseen_voice=config.unseen_voice,
        speeds=tuple(int(s) for s in config.speeds),
        pitches=tuple(int(p) for p in config.pitches),
        takes=config.takes,
        noise_snr_db=(float(config.noise_snr_db[0]), float(config.noise_snr_db[1])),
        seed=config.generation_seed,
        sample_rate=config.sample_rate,
    )
    folder = audio.materialize_speech_commands(Path(raw_root) / name, spec)
    user = AudioFolderConfig(
        path=str((folder / audio.SEEN_FOLDER).resolve()),
        sample_rate=config.sample_rate,
        unseen_voice_path=str((folder / audio.UNSEEN_VOICE_SPLIT).resolve()),
        **_split_fields(config),
    )
    return load_audio_folder(user, raw_root, name)


def _split_fields(config: SourceConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(SourceConfig)}


def _series_fields(config: SeriesConfig) -> dict[str, Any]:
    return {**_split_fields(config), "window": config.window, "horizon": config.horizon}


def _local(path: str | None, raw_root: Path) -> Path | None:
    return None if path is None else readers.resolve_path(path, raw_root)


def load_sklearn_digits(config: SklearnDigitsConfig, raw_root: Path, name: str) -> ImageFolderPlan:
    folder = materialize.materialize_digits(Path(raw_root) / name)
    user = ImageFolderConfig(
        path=str(folder), image_size=(8, 8), color_mode="grayscale", **_split_fields(config)
    )
    return load_image_folder(user, raw_root, name)


def load_keras_mnist(config: KerasMnistConfig, raw_root: Path, name: str) -> ImageFolderPlan:
    folder = materialize.materialize_mnist(Path(raw_root) / name, _local(config.path, raw_root))
    user = ImageFolderConfig(
        path=str(folder), image_size=(28, 28), color_mode="grayscale", **_split_fields(config)
    )
    return load_image_folder(user, raw_root, name)


def load_bbc_news(config: BbcNewsConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = materialize.materialize_bbc_news(Path(raw_root) / name)
    text_csv = TextCsvConfig(
        path=str(path), drop_duplicates=config.drop_duplicates, **_split_fields(config)
    )
    return load_text_csv(text_csv, raw_root, name)


def load_keras_imdb(config: KerasImdbConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = materialize.materialize_imdb(
        Path(raw_root) / name,
        _local(config.path, raw_root),
        _local(config.word_index_path, raw_root),
    )
    return load_text_csv(TextCsvConfig(path=str(path), **_split_fields(config)), raw_root, name)


def load_statsmodels_sunspots(
    config: StatsmodelsSunspotsConfig, raw_root: Path, name: str
) -> LoadedDataset:
    path = materialize.materialize_sunspots(Path(raw_root) / name)
    user = TimeseriesCsvConfig(
        path=str(path), value_column="sunactivity", time_column="year", **_series_fields(config)
    )
    return load_timeseries_csv(user, raw_root, name)


def load_sklearn_breast_cancer(
    config: SklearnBreastCancerConfig, raw_root: Path, name: str
) -> LoadedDataset:
    path = materialize.materialize_breast_cancer(Path(raw_root) / name)
    user = TabularCsvConfig(path=str(path), **_split_fields(config))
    return load_tabular_csv(user, raw_root, name)


def load_digits_detection(
    config: DigitsDetectionConfig, raw_root: Path, name: str
) -> LoadedDataset:
    spec = detection.CanvasSpec(
        num_images=config.num_images,
        canvas_size=config.canvas_size,
        min_object_size=config.min_object_size,
        max_object_size=config.max_object_size,
        max_objects=config.max_objects,
        seed=config.canvas_seed,
    )
    path = detection.materialize_detection_digits(Path(raw_root) / name, spec)
    user = DetectionCsvConfig(
        path=str(path.resolve()),
        image_size=(config.canvas_size, config.canvas_size),
        max_objects=config.max_objects,
        **_split_fields(config),
    )
    return load_detection_csv(user, raw_root, name)


def language_model_windows(documents: list[str], config: LanguageModelingConfig) -> LoadedDataset:
    """Split documents (seeded, by document) and cut each split's text into windows."""
    texts = [" ".join(d.split()) for d in documents]
    texts = [t.lower() if config.lowercase else t for t in texts if t]
    texts = list(dict.fromkeys(texts))  # a duplicated document would leak across splits
    if config.max_documents and config.max_documents < len(texts):
        keep = np.random.default_rng(config.seed).permutation(len(texts))[: config.max_documents]
        texts = [texts[i] for i in sorted(keep)]
    indices = random_split(len(texts), config.val_fraction, config.test_fraction, config.seed)
    stride = config.stride or config.window
    splits, stats = {}, {"window": float(config.window), "documents": float(len(texts))}
    for split, chosen in indices.items():
        text = " ".join(texts[i] for i in chosen)  # (C,) characters
        starts = range(0, len(text) - config.window, stride)
        if len(chosen) and not starts:
            raise DataError(
                f"the {split} split has {len(text)} characters, too few for one window of "
                f"{config.window}; use more documents or a smaller window"
            )
        x = np.empty(len(starts), dtype=object)  # (N,) context windows
        x[:] = [text[s : s + config.window] for s in starts]
        y = np.empty(len(starts), dtype=object)  # (N,) the windows one character later
        y[:] = [text[s + 1 : s + config.window + 1] for s in starts]
        splits[split] = (x, y)
        stats[f"{split}_characters"] = float(len(text))
    return LoadedDataset("text", "language_modeling", "string", (), splits, stats)


def load_bbc_news_lm(config: BbcNewsLmConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = materialize.materialize_bbc_news(Path(raw_root) / name)
    return language_model_windows(list(readers.read_text_csv(path).x), config)


def load_text_corpus(config: TextCorpusConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = readers.resolve_path(config.path, raw_root)
    return language_model_windows(readers.read_text_documents(path), config)


def load_translation_csv(config: TranslationCsvConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = readers.resolve_path(config.path, raw_root)
    sources, targets = readers.read_parallel_csv(path, config.source_column, config.target_column)
    indices = random_split(len(sources), config.val_fraction, config.test_fraction, config.seed)
    splits = {s: (sources[i], targets[i]) for s, i in indices.items()}
    train_x, train_y = splits["train"]
    stats = {
        "source_characters_max": float(max(len(t) for t in train_x)),
        "target_characters_max": float(max(len(t) for t in train_y)),
    }
    return LoadedDataset("text", "translation", "string", (), splits, stats)


def load_generated_dates(config: GeneratedDatesConfig, raw_root: Path, name: str) -> LoadedDataset:
    path = materialize.materialize_dates(
        Path(raw_root) / name,
        config.examples,
        config.first_year,
        config.last_year,
        config.generation_seed,
    )
    user = TranslationCsvConfig(path=str(path), **_split_fields(config))
    return load_translation_csv(user, raw_root, name)


Loader = Callable[[Any, Path, str], LoadedDataset | ImageFolderPlan | audio.AudioFolderPlan]

SOURCES: dict[str, tuple[type[SourceConfig], Loader]] = {
    "sklearn_digits": (SklearnDigitsConfig, load_sklearn_digits),
    "keras_mnist": (KerasMnistConfig, load_keras_mnist),
    "image_folder": (ImageFolderConfig, load_image_folder),
    "bbc_news": (BbcNewsConfig, load_bbc_news),
    "keras_imdb": (KerasImdbConfig, load_keras_imdb),
    "text_csv": (TextCsvConfig, load_text_csv),
    "statsmodels_sunspots": (StatsmodelsSunspotsConfig, load_statsmodels_sunspots),
    "timeseries_csv": (TimeseriesCsvConfig, load_timeseries_csv),
    "sklearn_breast_cancer": (SklearnBreastCancerConfig, load_sklearn_breast_cancer),
    "tabular_csv": (TabularCsvConfig, load_tabular_csv),
    "digits_detection": (DigitsDetectionConfig, load_digits_detection),
    "detection_csv": (DetectionCsvConfig, load_detection_csv),
    "digits_segmentation": (DigitsSegmentationConfig, load_digits_segmentation),
    "segmentation_folder": (SegmentationFolderConfig, load_segmentation_folder),
    "speech_commands": (SpeechCommandsConfig, load_speech_commands),
    "audio_folder": (AudioFolderConfig, load_audio_folder),
    "bbc_news_lm": (BbcNewsLmConfig, load_bbc_news_lm),
    "text_corpus": (TextCorpusConfig, load_text_corpus),
    "generated_dates": (GeneratedDatesConfig, load_generated_dates),
    "translation_csv": (TranslationCsvConfig, load_translation_csv),
}


# Sources whose raw files kerasops writes itself (under data/raw/<name>/) from installed
# packages; `kerasops data setup` writes and versions them.
BUILTIN_SOURCES = frozenset(
    {
        "sklearn_digits",
        "statsmodels_sunspots",
        "bbc_news",
        "sklearn_breast_cancer",
        "digits_detection",
        "digits_segmentation",
        "speech_commands",
        "bbc_news_lm",
        "generated_dates",
    }
)


def parse_source_config(values: Mapping[str, Any], prefix: str = "") -> SourceConfig:
    """Build the config of the source named by `values["source"]`; raise DataError/ConfigError."""
    source = values.get("source")
    known = ", ".join(sorted(SOURCES))
    if source is None:
        raise DataError(f"{prefix}source is missing; name one of: {known}")
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r} at {prefix}source; known sources: {known}")
    config_class = SOURCES[source][0]
    _require_fields(config_class, values, prefix)
    return config_class.from_dict(dict(values), prefix=prefix)


def _require_fields(
    config_class: type[SourceConfig], values: Mapping[str, Any], prefix: str
) -> None:
    for field in dataclasses.fields(config_class):
        no_default = field.default is dataclasses.MISSING
        if no_default and field.default_factory is dataclasses.MISSING and field.name not in values:
            raise ConfigError(
                f"{prefix}{field.name} is required by the source {values['source']!r}; add it"
            )


def load_source(
    config: SourceConfig, raw_root: Path, name: str
) -> LoadedDataset | ImageFolderPlan | audio.AudioFolderPlan:
    """Run the loader registered for `config.source`."""
    return SOURCES[config.source][1](config, Path(raw_root), name)
