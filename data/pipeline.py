"""tf.data input pipelines over prepared splits: streamed from shards, or from arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kerasops.data.errors import DataError

if TYPE_CHECKING:
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    from kerasops.data.prepared import Split

DEFAULT_SHUFFLE_BUFFER = 10_000  # examples; a split smaller than this is shuffled whole
MEMORY_CACHE_BYTES = 256 * 2**20  # a decoded split up to this size is cached in memory
Cache = Literal["auto", "memory", "none"] | str | bool


def make_tf_dataset(
    split: Split,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    cache: Cache = "auto",
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> tf.data.Dataset:
    """Batches of (x, y): x (B, *input_shape), y (B, *target_shape); strings stay tf.string.

    A sharded split streams: shards interleaved (their order shuffled with `shuffle`), a
    bounded shuffle buffer of `shuffle_buffer` serialized examples, decoding in parallel, and
    prefetch. The order is the same for the same `seed`. `cache`: `auto` keeps the decoded split
    in memory when it is small (at most 256 MiB decoded), `memory`/True always, `none`/False
    never; any other string is a file path for an on-disk cache of the decoded examples.
    Raises DataError for a batch size or shuffle buffer below 1.
    """
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if shuffle_buffer < 1:
        raise DataError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
    if split.shards is None:
        return _from_arrays(split, batch_size, shuffle, seed, cache, shuffle_buffer)
    spec = split.shards
    cache_to = _cache_target(cache, spec.decoded_bytes)
    records = spec.records(shuffle_files=shuffle and cache_to is None, seed=seed)
    decode = spec.decoder()
    buffer = max(1, min(shuffle_buffer, spec.count))
    if cache_to is None:  # shuffle the small serialized records, decode after
        if shuffle:
            records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:  # decode once, cache, then shuffle the decoded examples every epoch
        dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.cache(cache_to)
        if shuffle:
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(spec.count))  # Keras knows
    batches = dataset.batch(batch_size).map(_as_batch)
    options = tf.data.Options()  # multi-worker: shard by example, as a split may be one file
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE)


def _as_batch(x, y):
    """Identity on a batch. A map after the batch keeps MirroredStrategy's rebatching off the
    decode-and-batch chain of a sharded split, where it split some batches into an empty
    replica batch (seen as BatchNorm shape errors in evaluation); arrays need none."""
    return x, y


def _cache_target(cache: Cache, decoded_bytes: int) -> str | None:
    """'' for an in-memory cache, a path for an on-disk one, None for no cache."""
    if cache is True or cache == "memory":
        return ""
    if cache is False or cache == "none":
        return None
    if cache == "auto":
        return "" if decoded_bytes <= MEMORY_CACHE_BYTES else None
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
