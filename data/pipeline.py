"""tf.data input pipelines over prepared splits: streamed from shards, or from arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kerasops.data.errors import DataError

if TYPE_CHECKING:
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    from kerasops.data.prepared import Split
    from kerasops.data.shards import ShardSpec

DEFAULT_SHUFFLE_BUFFER = 10_000  # examples; a split smaller than this is shuffled whole
DEFAULT_SHUFFLE_BUFFER_MB = 64.0  # the streamed shuffle buffer's bound in bytes, too
DEFAULT_CACHE_MB = 256.0  # `auto`: a split whose decoded examples fit is cached in memory
Cache = Literal["auto", "memory", "none"] | str | bool


def make_tf_dataset(
    split: Split,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    cache: Cache = "auto",
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    shuffle_buffer_mb: float = DEFAULT_SHUFFLE_BUFFER_MB,
    cache_mb: float = DEFAULT_CACHE_MB,
) -> tf.data.Dataset:
    """Batches of (x, y): x (B, *input_shape), y (B, *target_shape); strings stay tf.string.

    A sharded split streams: shards interleaved (their order shuffled with `shuffle`), a
    bounded shuffle buffer of serialized examples (at most `shuffle_buffer` of them and at most
    `shuffle_buffer_mb` MiB at the shards' mean example size), decoding in parallel, and
    prefetch. The order is the same for the same `seed`. `cache`: `auto` keeps the decoded
    examples (images as uint8, cast to float32 per batch) in memory when they take at most
    `cache_mb` MiB, and then shuffles them there; `memory`/True always, `none`/False never; any
    other string is a file path for an on-disk cache of the decoded examples.
    Raises DataError for a batch size, shuffle buffer or byte bound below its minimum.
    """
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if shuffle_buffer < 1:
        raise DataError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
    if not shuffle_buffer_mb > 0 or not cache_mb >= 0:
        raise DataError(
            f"shuffle_buffer_mb must be positive and cache_mb at least 0, got "
            f"{shuffle_buffer_mb} and {cache_mb}"
        )
    if split.shards is None:
        return _from_arrays(split, batch_size, shuffle, seed, cache, shuffle_buffer)
    spec = split.shards
    cache_to = cache_target(cache, spec.decoded_bytes, cache_mb)
    records = spec.records(shuffle_files=shuffle and cache_to is None, seed=seed)
    decode = spec.decoder(image_dtype="uint8")  # cast to float32 per batch, after the cache
    if cache_to is None:  # shuffle the small serialized records, decode after
        if shuffle:
            buffer = streamed_buffer_size(spec, shuffle_buffer, shuffle_buffer_mb)
            records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:  # decode once, cache, then shuffle the decoded examples the cache holds, every epoch
        dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.cache(cache_to)
        if shuffle:
            buffer = max(1, min(shuffle_buffer, spec.count))
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(spec.count))  # Keras knows
    batches = dataset.batch(batch_size).map(_as_batch)
    options = tf.data.Options()  # multi-worker: shard by example, as a split may be one file
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE)


def streamed_buffer_size(spec: ShardSpec, shuffle_buffer: int, shuffle_buffer_mb: float) -> int:
    """Serialized examples in a streamed split's shuffle buffer: min(count, `shuffle_buffer`,
    `shuffle_buffer_mb` MiB / the mean stored example size), at least 1."""
    by_bytes = int(shuffle_buffer_mb * 2**20 // max(1.0, spec.mean_record_bytes))
    return max(1, min(spec.count, shuffle_buffer, by_bytes))


def _as_batch(x, y):
    """Images decoded as uint8 become float32 (0-255) here, one batch at a time. A map after
    the batch also keeps MirroredStrategy's rebatching off the decode-and-batch chain of a
    sharded split, where it split some batches into an empty replica batch (seen as BatchNorm
    shape errors in evaluation)."""
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    return (tf.cast(x, tf.float32) if x.dtype == tf.uint8 else x), y


def cache_target(
    cache: Cache, decoded_bytes: int, cache_mb: float = DEFAULT_CACHE_MB
) -> str | None:
    """'' for an in-memory cache, a path for an on-disk one, None for no cache: `auto` caches
    in memory when the decoded split takes at most `cache_mb` MiB."""
    if cache is True or cache == "memory":
        return ""
    if cache is False or cache == "none":
        return None
    if cache == "auto":
        return "" if decoded_bytes <= cache_mb * 2**20 else None
    return str(cache)


def _from_arrays(
    split: Split, batch_size: int, shuffle: bool, seed: int, cache: Cache, shuffle_buffer: int
) -> tf.data.Dataset:
    """Arrays already in memory (a recipe's derived split): sliced, shuffled in a buffer."""
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if cache not in (False, "none"):
        dataset = dataset.cache()
    if shuffle:
        buffer = max(1, min(shuffle_buffer, len(split.y)))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
