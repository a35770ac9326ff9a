"""make_tf_dataset: batch shapes and dtypes, strings, seeded shuffling."""

from __future__ import annotations

import numpy as np
import pytest

from kerasops.data import DataError, Split, make_tf_dataset


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def image_split(n: int = 10) -> Split:
    x = np.arange(n * 8 * 8, dtype=np.float32).reshape(n, 8, 8, 1)
    return Split(x=x, y=np.arange(n, dtype=np.int32))


def test_image_batches_have_the_right_shapes_and_dtypes(tf):
    batches = list(make_tf_dataset(image_split(), batch_size=4, shuffle=False))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 8, 8, 1), (4, 8, 8, 1), (2, 8, 8, 1)]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    np.testing.assert_array_equal(batches[0][1].numpy(), [0, 1, 2, 3])


def test_strings_stay_strings(tf):
    x = np.empty(3, dtype=object)
    x[:] = ["one text", "two", "three, with a comma"]
    batch_x, batch_y = next(iter(make_tf_dataset(Split(x, np.zeros(3, np.int32)), 8, False)))
    assert batch_x.dtype == tf.string and tuple(batch_x.shape) == (3,)
    assert batch_x.numpy()[2].decode() == "three, with a comma"


def test_forecast_targets_keep_their_horizon(tf):
    split = Split(x=np.zeros((5, 6, 1), np.float32), y=np.zeros((5, 3), np.float32))
    x, y = next(iter(make_tf_dataset(split, batch_size=5, shuffle=True)))
    assert tuple(x.shape) == (5, 6, 1) and tuple(y.shape) == (5, 3)


def test_shuffling_is_seeded_and_reshuffles_each_epoch(tf):
    def epochs(seed: int, count: int = 2) -> list[list[int]]:
        dataset = make_tf_dataset(image_split(32), batch_size=32, shuffle=True, seed=seed)
        return [next(iter(dataset))[1].numpy().tolist() for _ in range(count)]

    first, second = epochs(3)
    assert sorted(first) == list(range(32)) and first != second
    assert epochs(3) == [first, second]


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(DataError, match="batch_size must be at least 1"):
        make_tf_dataset(image_split(), batch_size=0, shuffle=False)
