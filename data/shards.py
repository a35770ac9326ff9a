"""Prepared splits as TFRecord shards of `tf.train.Example`, and reading them back.

Each example holds two bytes features: `x` (an encoded PNG/JPEG image, the raw little-endian
bytes of a numeric array, or UTF-8 text) and `y` (raw bytes of the target, or UTF-8 text). How
each is encoded is the manifest's `encodings`; the shapes are its `input_shape`/`target_shape`.
A split is one or more shards `<split>-NNNNN.tfrecord` of about `shard_size_mb` each, written in
example order, so equal input gives equal bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from kerasops.data.errors import DataError

if TYPE_CHECKING:
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

Encoding = Literal["image", "float32", "int32", "string"]
SHARD_SUFFIX = ".tfrecord"
_RECORD_OVERHEAD = 16  # TFRecord framing: length, its CRC and the data's CRC


def shard_name(split: str, index: int) -> str:
    """The file name of shard `index` of `split`."""
    return f"{split}-{index:05d}{SHARD_SUFFIX}"


def encoding_of(values: np.ndarray, kind: str) -> Encoding:
    """How an array's examples are stored: images as PNG, numbers raw, text as UTF-8."""
    if values.dtype.kind in "OUS":
        return "string"
    if kind == "image" and _is_pixels(values):
        return "image"
    return "int32" if values.dtype.kind in "iu" else "float32"


def _is_pixels(values: np.ndarray) -> bool:
    """Integral values 0-255 in (N, H, W, 1|3): stored losslessly as PNG."""
    if values.ndim != 4 or values.shape[-1] not in (1, 3) or values.size == 0:
        return values.size == 0 and values.ndim == 4
    return bool(values.min() >= 0 and values.max() <= 255 and np.all(np.mod(values, 1) == 0))


def encode_value(value: np.ndarray | str, encoding: Encoding) -> bytes:
    """One example's `x` or `y` as the bytes a shard stores."""
    if encoding == "string":
        return str(value).encode("utf-8")
    if encoding == "image":
        # deferred: PIL is needed only to encode pixels
        from kerasops.data.imaging import encode_pixels

        pixels = np.asarray(value)
        return encode_pixels(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    dtype = "<i4" if encoding == "int32" else "<f4"
    return np.ascontiguousarray(value, dtype=dtype).tobytes()


def serialize_example(x: bytes, y: bytes) -> bytes:
    """A `tf.train.Example` with bytes features x and y, serialized deterministically."""
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    feature = {
        "x": tf.train.Feature(bytes_list=tf.train.BytesList(value=[x])),
        "y": tf.train.Feature(bytes_list=tf.train.BytesList(value=[y])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


@dataclasses.dataclass(frozen=True)
class WrittenShard:
    """One finished shard: its file name, example count and sha256."""

    name: str
    count: int
    sha256: str


class ShardWriter:
    """Writes one split's serialized examples into shards of about `max_bytes` each."""

    def __init__(self, folder: Path, split: str, max_bytes: int):
        self.folder, self.split, self.max_bytes = Path(folder), split, max_bytes
        self.shards: list[WrittenShard] = []
        self._writer = None
        self._count = self._bytes = 0
        self._digest = hashlib.sha256()

    def write(self, record: bytes) -> None:
        """Append one serialized example, starting a new shard when this one is full."""
        size = len(record) + _RECORD_OVERHEAD
        if self._writer is not None and self._bytes + size > self.max_bytes:
            self._finish()
        if self._writer is None:
            # deferred: importing kerasops.data does not load TensorFlow
            import tensorflow as tf

            path = self.folder / shard_name(self.split, len(self.shards))
            self._writer = tf.io.TFRecordWriter(str(path))
        self._writer.write(record)
        self._count, self._bytes = self._count + 1, self._bytes + size

    def close(self) -> list[WrittenShard]:
        """Finish the last shard; a split without examples gets one empty shard."""
        if self._writer is None and not self.shards:
            self._open_empty()
        if self._writer is not None:
            self._finish()
        return self.shards

    def _open_empty(self) -> None:
        # deferred: importing kerasops.data does not load TensorFlow
        import tensorflow as tf

        path = self.folder / shard_name(self.split, 0)
        self._writer = tf.io.TFRecordWriter(str(path))

    def _finish(self) -> None:
        self._writer.close()
        path = self.folder / shard_name(self.split, len(self.shards))
        self.shards.append(WrittenShard(path.name, self._count, sha256_file(path)))
        self._writer, self._count, self._bytes = None, 0, 0


def write_split(
    folder: Path,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    encodings: dict[str, Encoding],
    max_bytes: int,
    what: str = "writing",
) -> list[WrittenShard]:
    """Write in-memory (x, y) arrays of one split as shards, example by example."""
    # deferred: tqdm is needed only while writing
    from kerasops.data.progress import progress

    writer = ShardWriter(folder, split, max_bytes)
    for i in progress(range(len(y)), len(y), f"{what} {split}", "ex"):
        writer.write(
            serialize_example(
                encode_value(x[i], encodings["x"]), encode_value(y[i], encodings["y"])
            )
        )
    return writer.close()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """What decoding one split's shards needs: the files, count, encodings and shapes."""

    files: tuple[Path, ...]
    count: int
    x_encoding: Encoding
    y_encoding: Encoding
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]

    @property
    def decoded_bytes(self) -> int:
        """Bytes the decoded split takes in memory as the input pipeline caches it: images as
        uint8, other values as float32/int32, texts estimated."""
        per_value = {"image": 1, "float32": 4, "int32": 4}
        per_x = per_value.get(self.x_encoding, 0) * int(np.prod(self.input_shape)) or 256
        per_y = per_value.get(self.y_encoding, 0) * int(np.prod(self.target_shape)) or 256
        return self.count * (per_x + per_y)

    @property
    def mean_record_bytes(self) -> float:
        """The mean size of one serialized example, from the sizes of the listed shards."""
        stored = sum(f.stat().st_size for f in self.files) - _RECORD_OVERHEAD * self.count
        return stored / max(1, self.count)

    def records(self, shuffle_files: bool = False, seed: int = 0) -> tf.data.Dataset:
        """The serialized examples, shards interleaved (in file order unless shuffled)."""
        # deferred: importing kerasops.data does not load TensorFlow
        import tensorflow as tf

        names = [str(f) for f in self.files]
        files = tf.data.Dataset.from_tensor_slices(names)
        if shuffle_files and len(names) > 1:
            files = files.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
        if len(names) == 1:
            return tf.data.TFRecordDataset(names[0])
        return files.interleave(
            lambda f: tf.data.TFRecordDataset(f),
            cycle_length=min(len(names), 4),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def decoder(self, parts: tuple[str, ...] = ("x", "y"), image_dtype: str = "float32"):
        """A function from one serialized example to its decoded (x, y) (or one of them);
        images as `image_dtype` (float32, or uint8 as stored)."""
        # deferred: importing kerasops.data does not load TensorFlow
        import tensorflow as tf

        features = {p: tf.io.FixedLenFeature([], tf.string) for p in parts}
        encodings = {"x": self.x_encoding, "y": self.y_encoding}
        shapes = {"x": self.input_shape, "y": self.target_shape}

        def decode(record):
            parsed = tf.io.parse_single_example(record, features)
            values = tuple(_decode(parsed[p], encodings[p], shapes[p], image_dtype) for p in parts)
            return values if len(values) > 1 else values[0]

        return decode

    def arrays(self, parts: tuple[str, ...] = ("x", "y"), batch: int = 1024) -> Iterator[tuple]:
        """Batches of decoded numpy arrays, in stored order (bounded memory)."""
        # deferred: importing kerasops.data does not load TensorFlow
        import tensorflow as tf

        dataset = self.records().map(self.decoder(parts), num_parallel_calls=tf.data.AUTOTUNE)
        for values in dataset.batch(batch).as_numpy_iterator():
            yield values if len(parts) > 1 else (values,)


def _decode(value, encoding: Encoding, shape: tuple[int, ...], image_dtype: str = "float32"):
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    if encoding == "string":
        return value
    if encoding == "image":
        channels = shape[-1]
        image = tf.cond(  # JPEG decoded as PIL decodes it (accurate integer DCT), else PNG
            tf.io.is_jpeg(value),
            lambda: tf.io.decode_jpeg(value, channels=channels, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_png(value, channels=channels),
        )
        return tf.ensure_shape(tf.cast(image, image_dtype), shape)  # (H, W, C) 0-255
    if encoding == "int32":  # labels as int64, as NumPy arrays hold them: under
        # MirroredStrategy int32 labels broke the evaluation step (BatchNorm shape errors)
        ids = tf.io.decode_raw(value, tf.int32, little_endian=True)
        return tf.reshape(tf.cast(ids, tf.int64), shape)
    return tf.reshape(tf.io.decode_raw(value, tf.float32, little_endian=True), shape)


def check_shard(path: Path, expected: str | None, verify: bool, remedy: str) -> None:
    """Raise DataError when a listed shard is missing or, with `verify`, modified."""
    if expected is None:
        raise DataError(f"{path.parent / 'manifest.json'} does not list {path.name}; {remedy}")
    if not path.is_file():
        raise DataError(f"{path} is missing; {remedy}")
    if verify and sha256_file(path) != expected:
        raise DataError(f"{path} no longer matches its manifest hash; {remedy}")
