"""keras_mnist and keras_imdb from small local files in keras' own formats (never a download).

keras' `get_file` only looks in its cache (`~/.keras/datasets`, names without folders) and checks
the official file hash; a smaller file of the same format would be taken for a corrupt download.
So a local `path` is read directly, in keras' format and order; these tests check that this
reading agrees with keras' own loader on the same file, with keras' cache lookup stubbed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kerasops.data import DataError, load_prepared, prepare_dataset
from kerasops.data.materialize import load_imdb_sequences, load_mnist_arrays

WORDS = {"the": 1, "movie": 2, "was": 3, "great": 4, "awful": 5, "plot": 6}


def make_mnist_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("test", 12)):
        arrays[f"x_{split}"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = np.arange(n, dtype=np.uint8) % 3
    np.savez(path, **arrays)
    return path


def ragged(sequences: list[list[int]]) -> np.ndarray:
    array = np.empty(len(sequences), dtype=object)  # (N,) of lists, as in keras' imdb.npz
    array[:] = sequences
    return array


def make_imdb_files(folder: Path) -> Path:
    good, bad = [1, 2, 3, 4], [1, 6, 3, 5, 5]
    train = [good, bad] * 10 + [[2, 3, 4]]
    test = [bad, good] * 4
    np.savez(
        folder / "imdb.npz",
        x_train=ragged(train),
        y_train=np.array([1, 0] * 10 + [1]),
        x_test=ragged(test),
        y_test=np.array([0, 1] * 4),
    )
    (folder / "imdb_word_index.json").write_text(json.dumps(WORDS))
    return folder / "imdb.npz"


def test_keras_mnist_from_a_local_file(tmp_path):
    path = make_mnist_npz(tmp_path / "mnist.npz")
    config = {"source": "keras_mnist", "path": str(path)}
    manifest = prepare_dataset("mnist", config, tmp_path / "raw", tmp_path / "prepared")
    data = load_prepared("mnist", tmp_path / "prepared")
    assert manifest.input_shape == (28, 28, 1) and manifest.classes == ("0", "1", "2")
    assert sum(manifest.splits.values()) == 42
    assert data.splits["train"].x.max() <= 255
    assert len(list((tmp_path / "raw" / "mnist").glob("*/*.png"))) == 42


def test_keras_imdb_from_local_files_is_decoded_to_text(tmp_path):
    path = make_imdb_files(tmp_path)
    config = {"source": "keras_imdb", "path": str(path), "val_fraction": 0.2}
    manifest = prepare_dataset("imdb", config, tmp_path / "raw", tmp_path / "prepared")
    data = load_prepared("imdb", tmp_path / "prepared")
    texts = {str(t) for s in data.splits.values() for t in s.x}
    assert manifest.classes == ("negative", "positive") and manifest.input_dtype == "string"
    assert texts == {"the movie was great", "the plot was awful awful", "movie was great"}
    train = data.splits["train"]
    for text, label in zip(train.x, train.y, strict=True):
        assert ("great" in text) == (manifest.classes[label] == "positive")


def test_local_mnist_reading_matches_keras_loader(tmp_path, monkeypatch):
    import keras.src.datasets.mnist as keras_mnist

    path = make_mnist_npz(tmp_path / "mnist.npz")
    monkeypatch.setattr(keras_mnist, "get_file", lambda fname, origin, file_hash: str(path))
    ours, theirs = load_mnist_arrays(path), load_mnist_arrays(None)
    flat = [(a, b) for pair in zip(ours, theirs, strict=True) for a, b in zip(*pair, strict=True)]
    for a, b in flat:  # x_train, y_train, x_test, y_test
        np.testing.assert_array_equal(a, b)


def test_local_imdb_reading_matches_keras_loader(tmp_path, monkeypatch):
    import keras.src.datasets.imdb as keras_imdb

    path = make_imdb_files(tmp_path)
    monkeypatch.setattr(keras_imdb, "get_file", lambda fname, origin, file_hash: str(path))
    (ours_x, ours_y), (ours_tx, ours_ty) = load_imdb_sequences(path)
    (keras_x, keras_y), (keras_tx, keras_ty) = load_imdb_sequences(None)
    assert [list(s) for s in ours_x] == [list(s) for s in keras_x]
    assert [list(s) for s in ours_tx] == [list(s) for s in keras_tx]
    np.testing.assert_array_equal(ours_y, keras_y)
    np.testing.assert_array_equal(ours_ty, keras_ty)


def test_a_file_that_is_not_keras_format_is_refused(tmp_path):
    np.savez(tmp_path / "mnist.npz", images=np.zeros((2, 28, 28)))
    config = {"source": "keras_mnist", "path": str(tmp_path / "mnist.npz")}
    with pytest.raises(DataError, match="lacks the array.*x_train.*keras' mnist.npz format"):
        prepare_dataset("mnist", config, tmp_path / "raw", tmp_path / "prepared")


def test_a_missing_word_index_is_named(tmp_path):
    path = make_imdb_files(tmp_path)
    (tmp_path / "imdb_word_index.json").unlink()
    config = {"source": "keras_imdb", "path": str(path)}
    with pytest.raises(DataError, match="imdb_word_index.json does not exist"):
        prepare_dataset("imdb", config, tmp_path / "raw", tmp_path / "prepared")
