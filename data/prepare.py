"""Prepare a dataset: load its source, split it and write versioned files atomically."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.config import StrictConfig
from kerasops.data.audio import AudioFolderPlan
from kerasops.data.csv_table import CsvPlan
from kerasops.data.errors import DataError
from kerasops.data.external_shuffle import INDEX_BYTES, ShuffledShardWriter
from kerasops.data.image_folder import (
    ImageFolderPlan,
    PixelStats,
    encoded_images,
    image_pool,
)
from kerasops.data.imaging import ImageFailure
from kerasops.data.manifest import Manifest, content_hash
from kerasops.data.progress import progress
from kerasops.data.shards import (
    ShardWriter,
    WrittenShard,
    encode_value,
    encoding_of,
    serialize_example,
    write_split,
)
from kerasops.data.sources import LoadedDataset, SourceConfig, load_source, parse_source_config
from kerasops.data.splits import SPLITS
from kerasops.data.tasks import class_labels, is_labelled

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def prepare_dataset(
    name: str,
    config: Mapping[str, Any] | StrictConfig,
    raw_root: Path,
    prepared_root: Path,
    workers: int | None = None,
) -> Manifest:
    """Write `<prepared_root>/<name>/<split>-NNNNN.tfrecord` shards and `manifest.json`; return
    the manifest.

    Images are decoded and encoded in streaming batches (on `workers` processes, default every
    core, for a large folder), so memory does not grow with the dataset. The files appear all at
    once: they are written to a temporary folder next to the target that then replaces the
    previous version, so a failed, killed or out-of-disk prepare leaves the previous version
    untouched. Raises DataError or ConfigError for a bad name, config or raw input.
    """
    check_dataset_name(name)
    source_config = as_source_config(config, prefix=f"datasets.{name}.")
    loaded = load_source(source_config, Path(raw_root), name)
    return _write_atomically(name, source_config, loaded, Path(prepared_root), workers)


def check_dataset_name(name: str) -> None:
    """Raise DataError unless `name` can be a folder name (letters, digits, `_`, `-`, `.`)."""
    if not _NAME.match(name):
        raise DataError(
            f"dataset name {name!r} is not a plain folder name; use letters, digits, _, - or ."
        )


def as_source_config(config: Mapping[str, Any] | StrictConfig, prefix: str = "") -> SourceConfig:
    """A source config as is, or one parsed from a mapping with a `source` key."""
    if isinstance(config, SourceConfig):
        return config
    if isinstance(config, StrictConfig):
        raise DataError(f"{type(config).__name__} is not a dataset source config")
    if not isinstance(config, Mapping):
        raise DataError(f"{prefix.rstrip('.')}: expected a mapping, got {config!r}")
    return parse_source_config(config, prefix=prefix)


def _write_atomically(
    name: str,
    config: SourceConfig,
    loaded: LoadedDataset | CsvPlan | ImageFolderPlan | AudioFolderPlan,
    prepared_root: Path,
    workers: int | None,
) -> Manifest:
    prepared_root.mkdir(parents=True, exist_ok=True)
    for stale in prepared_root.glob(f".{name}.tmp-*"):  # left by a killed preparation
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=prepared_root))
    try:
        if isinstance(loaded, ImageFolderPlan):
            manifest = _write_image_folder(staging, name, config, loaded, workers)
        elif isinstance(loaded, AudioFolderPlan):
            manifest = _write_audio_folder(staging, name, config, loaded)
        elif isinstance(loaded, CsvPlan):
            manifest = _write_csv(staging, name, config, loaded)
        else:
            manifest = _write_arrays(staging, name, config, loaded)
        manifest.write(staging / "manifest.json")
        _replace(staging, prepared_root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_arrays(
    staging: Path, name: str, config: SourceConfig, loaded: LoadedDataset
) -> Manifest:
    """Write in-memory splits (built-in and small sources) as shards, example by example."""
    xs = [loaded.splits[s][0] for s in SPLITS]
    ys = [loaded.splits[s][1] for s in SPLITS]
    encodings = {"x": _common_encoding(xs, loaded.kind), "y": _common_encoding(ys, "target")}
    shards: dict[str, list[WrittenShard]] = {}
    for split in SPLITS:
        x, y = loaded.splits[split]
        shards[split] = write_split(
            staging, split, x, y, encodings, _shard_bytes(config), f"writing {name}"
        )
    x_train, y_train = loaded.splits["train"]
    return _manifest(
        name,
        config,
        loaded.kind,
        loaded.task,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        input_dtype=loaded.input_dtype,
        target_shape=tuple(int(d) for d in y_train.shape[1:]),
        classes=loaded.classes,
        class_counts=_class_counts(loaded),
        stats=loaded.stats,
        encodings=encodings,
        shards=shards,
    )


def _common_encoding(values: list[np.ndarray], kind: str) -> str:
    """One encoding for every split: pixels are PNG only where every split's values allow it."""
    found = {encoding_of(v, kind) for v in values}
    if found == {"image"} or len(found) == 1:
        return found.pop()
    return "float32" if "string" not in found else "string"


def _shard_bytes(config: SourceConfig) -> int:
    return max(1, int(config.shard_size_mb * 2**20))


def _write_image_folder(
    staging: Path, name: str, config: SourceConfig, plan: ImageFolderPlan, workers: int | None
) -> Manifest:
    """Decode, resize and encode the folder's images in streaming batches into shards."""
    pixels, shards = PixelStats(), {}
    skipped = [str(p.relative_to(plan.folder)) for p in plan.skipped]
    counts = {s: np.zeros(len(plan.classes), dtype=np.int64) for s in SPLITS}
    pool = image_pool(plan, workers)
    writers = {s: ShardWriter(staging, s, _shard_bytes(config)) for s in SPLITS}
    try:
        images = encoded_images(plan, pool)
        for split, label, image in progress(images, plan.count, f"preparing {name}", "img"):
            _close_before(split, writers, shards)
            if isinstance(image, ImageFailure):
                skipped.append(_unreadable(image, plan))
                continue
            pixels.add(image, train=split == "train")
            writers[split].write(serialize_example(image.data, encode_value(label, "int32")))
            counts[split][label] += 1
        _close_before(None, writers, shards)
    finally:
        if pool is not None:
            pool.terminate()
    stats = pixels.stats()
    if plan.skip_corrupt:
        stats["skipped_files"] = float(len(skipped))
    return _manifest(
        name,
        config,
        "image",
        "classification",
        input_shape=(*plan.image_size, plan.channels),
        input_dtype="float32",
        target_shape=(),
        classes=plan.classes,
        class_counts={s: _per_class(plan.classes, c) for s, c in counts.items()},
        stats=stats,
        encodings={"x": "image", "y": "int32"},
        shards=shards,
        skipped=tuple(sorted(skipped)),
    )


def _write_csv(staging: Path, name: str, config: SourceConfig, plan: CsvPlan) -> Manifest:
    """Stream the CSV's rows into their splits' shards, counting classes (and, for text, the
    training texts' words) on the way: memory is a batch of rows and one shuffle bucket, never
    the file. The train split is written in a random order seeded by `seed` (an external
    shuffle through bucket files in `staging`, data/external_shuffle.py), so a file sorted by
    class or time still mixes in training's bounded shuffle buffer; val and test keep the
    file's order."""
    classified = plan.task == "classification"
    encodings = {
        "x": "string" if plan.kind == "text" else "float32",
        "y": "int32" if classified else "float32",
    }
    writers: dict[str, ShardWriter | ShuffledShardWriter] = {
        s: ShardWriter(staging, s, _shard_bytes(config)) for s in SPLITS[1:]
    }
    writers["train"] = ShuffledShardWriter(
        staging,
        "train",
        _shard_bytes(config),
        config.seed,
        _expected_train_bytes(plan),
        f"writing {name} train, shuffled",
    )
    counts = np.zeros((len(SPLITS), len(plan.classes)), dtype=np.int64)  # (splits, classes)
    words = TextStats()
    try:
        for split, x, target in progress(plan.examples(), plan.count, f"writing {name}", "row"):
            record = serialize_example(
                encode_value(x, encodings["x"]), encode_value(target, encodings["y"])
            )
            writers[SPLITS[split]].write(record)
            if classified:
                counts[split, target] += 1
            if plan.kind == "text" and split == 0:
                words.add(x)
    except BaseException:
        writers["train"].abort()
        raise
    return _csv_manifest(name, config, plan, encodings, counts, words, writers)


def _csv_manifest(
    name: str,
    config: SourceConfig,
    plan: CsvPlan,
    encodings: dict[str, str],
    counts: np.ndarray,
    words: TextStats,
    writers: dict[str, ShardWriter | ShuffledShardWriter],
) -> Manifest:
    """The CSV's manifest, once its writers are closed (train first: its buckets written)."""
    stats = {} if plan.kind == "tabular" else words.stats()
    if plan.duplicates_dropped is not None:
        stats["duplicates_dropped"] = float(plan.duplicates_dropped)
    return _manifest(
        name,
        config,
        plan.kind,
        plan.task,
        input_shape=(len(plan.features),) if plan.kind == "tabular" else (),
        input_dtype="string" if plan.kind == "text" else "float32",
        target_shape=(),
        classes=plan.classes,
        class_counts={s: _per_class(plan.classes, counts[i]) for i, s in enumerate(SPLITS)}
        if plan.task == "classification"
        else {},
        stats=stats,
        encodings=encodings,
        shards={s: writers[s].close() for s in SPLITS},
        feature_names=plan.features if plan.kind == "tabular" else (),
    )


def _expected_train_bytes(plan: CsvPlan) -> int:
    """About the memory the train split's serialized examples take while shuffled, records and
    index: exact for a table (F float32 and a 4-byte target each); for text, the train rows'
    share of the file's bytes plus each record's framing."""
    rows = int(np.count_nonzero(plan.row_splits == SPLITS.index("train")))
    if plan.kind == "tabular":
        record = len(serialize_example(bytes(4 * len(plan.features)), bytes(4)))
        return rows * (record + INDEX_BYTES)
    share = plan.path.stat().st_size * rows // max(1, len(plan.row_splits))
    return share + rows * (len(serialize_example(b"", bytes(4))) + 2 + INDEX_BYTES)


class TextStats:
    """The word count of the training texts (whitespace-separated), summed as they stream."""

    def __init__(self) -> None:
        self.count = self.total = self.most = 0

    def add(self, text: str) -> None:
        words = len(text.split())
        self.count, self.total, self.most = (
            self.count + 1,
            self.total + words,
            max(self.most, words),
        )

    def stats(self) -> dict[str, float]:
        return {
            "train_words_mean": self.total / self.count,
            "train_words_max": float(self.most),
        }


def _close_before(
    split: str | None, writers: dict[str, ShardWriter], shards: dict[str, list[WrittenShard]]
) -> None:
    """Close the writers of the splits before `split` (SPLITS' order; None: every one) that
    are still open, so each split's last shard is finished once its images are written."""
    for earlier in SPLITS[: SPLITS.index(split)] if split is not None else SPLITS:
        if earlier not in shards:
            shards[earlier] = writers[earlier].close()


def _write_audio_folder(
    staging: Path, name: str, config: SourceConfig, plan: AudioFolderPlan
) -> Manifest:
    """Read, resample and pad the clips one by one into float32 shards (train, val, test and a
    held-out `unseen_voice` split where the plan has one); a bad clip is a DataError naming it."""
    shards, counts = {}, {}
    squares, samples = 0.0, 0  # of the training clips, for their RMS
    for split in plan.files:
        writer = ShardWriter(staging, split, _shard_bytes(config))
        per_class = np.zeros(len(plan.classes), dtype=np.int64)
        clips = plan.clips(split)
        for label, clip in progress(
            clips, len(plan.files[split]), f"preparing {name} {split}", "clip"
        ):
            writer.write(
                serialize_example(encode_value(clip, "float32"), encode_value(label, "int32"))
            )
            per_class[label] += 1
            if split == "train":
                squares += float(np.sum(clip.astype(np.float64) ** 2))
                samples += clip.size
        shards[split], counts[split] = writer.close(), _per_class(plan.classes, per_class)
    stats = {
        "sample_rate": float(plan.sample_rate),
        "clip_seconds": float(plan.clip_seconds),
        "sample_rms": float(np.sqrt(squares / max(samples, 1))),
    }
    return _manifest(
        name,
        config,
        "audio",
        "classification",
        input_shape=(plan.window,),
        input_dtype="float32",
        target_shape=(),
        classes=plan.classes,
        class_counts=counts,
        stats=stats,
        encodings={"x": "float32", "y": "int32"},
        shards=shards,
    )


def _per_class(classes: tuple[str, ...], counts: np.ndarray) -> dict[str, int]:
    return {c: int(n) for c, n in zip(classes, counts, strict=True)}


def _unreadable(failure: ImageFailure, plan: ImageFolderPlan) -> str:
    """The skipped file's path in the folder; without skip_corrupt, a DataError naming it."""
    if not plan.skip_corrupt:
        raise DataError(
            f"{failure.path} cannot be read as an image ({failure.reason}); "
            "remove or replace it, or set skip_corrupt: true"
        )
    return str(Path(failure.path).relative_to(plan.folder))


def _replace(staging: Path, target: Path) -> None:
    """Swap `staging` in for `target`; the old version is removed only once the new one is there."""
    if not target.exists():
        staging.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.rename(retired / target.name)
    try:
        staging.rename(target)
    except OSError:
        (retired / target.name).rename(target)
        raise
    finally:
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)


def _manifest(
    name: str,
    config: SourceConfig,
    kind: str,
    task: str,
    shards: dict[str, list[WrittenShard]],
    **fields: Any,
) -> Manifest:
    files = {shard.name: shard.sha256 for split in shards for shard in shards[split]}
    return Manifest(
        name=name,
        source=config.source,
        kind=kind,
        task=task,
        splits={s: sum(shard.count for shard in shards[s]) for s in shards},
        shards={s: {shard.name: shard.count for shard in shards[s]} for s in shards},
        files=files,
        content_hash=content_hash(files),
        config=config.to_dict(),
        **fields,
    )


def _class_counts(loaded: LoadedDataset) -> dict[str, dict[str, int]]:
    """Examples (for detection: boxes) per class of each split; {} for tasks without classes."""
    if not is_labelled(loaded.task):
        return {}
    counts = {}
    for split in SPLITS:
        labels = class_labels(loaded.splits[split][1], loaded.task).astype(np.int64)
        per_class = np.bincount(labels, minlength=len(loaded.classes))
        counts[split] = {c: int(n) for c, n in zip(loaded.classes, per_class, strict=True)}
    return counts
