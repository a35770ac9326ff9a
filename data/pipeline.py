"""tf.data input pipelines over prepared splits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kerasops.data.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf

    from kerasops.data.prepared import Split


def make_tf_dataset(
    split: Split, batch_size: int, shuffle: bool, seed: int = 0, cache: bool = True
) -> tf.data.Dataset:
    """Batches of (x, y): x (B, *input_shape), y (B, *target_shape); strings stay tf.string.

    With `shuffle`, the whole split is the shuffle buffer, seeded and reshuffled every epoch.
    Raises DataError for a batch size below 1.
    """
    # deferred: importing kerasops.data does not load TensorFlow
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    dataset = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if cache:
        dataset = dataset.cache()
    if shuffle:
        buffer = max(1, len(split.y))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
