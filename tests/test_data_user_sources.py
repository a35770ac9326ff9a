"""User formats (image folder, text CSV, series CSV, tabular CSV) and the errors bad input gets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasops.data import DataError, load_prepared, prepare_dataset, resolve_dataset_config
from kerasops.errors import ConfigError


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=10, size=(12, 10)) -> Path:
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(root / cls / f"{i}.png")
    return root


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def text_rows(n_per_class: int = 10) -> list[list[str]]:
    return [
        [f"{label} example number {i},\nwith a comma", label]
        for label in ("ham", "spam", "eggs")
        for i in range(n_per_class)
    ]


def test_image_folder_prepares_resized_rgb_images(tmp_path):
    make_image_folder(tmp_path / "raw" / "pets")
    config = {"source": "image_folder", "path": "pets", "image_size": [8, 6]}
    manifest = prepare_dataset("pets", config, tmp_path / "raw", tmp_path / "prepared")
    data = load_prepared("pets", tmp_path / "prepared")
    assert manifest.input_shape == (8, 6, 3)
    assert manifest.classes == ("cat", "dog")
    assert manifest.splits == {"train": 12, "val": 4, "test": 4}  # round(1.5) == 2 per class
    assert data.splits["train"].x.dtype == np.float32
    assert data.splits["train"].x.max() <= 255


def test_text_csv_prepares_strings_through_the_same_path(tmp_path):
    write_csv(tmp_path / "raw" / "mail.csv", ["text", "label"], text_rows())
    config = {"source": "text_csv", "path": "mail.csv", "val_fraction": 0.2}
    manifest = prepare_dataset("mail", config, tmp_path / "raw", tmp_path / "prepared")
    data = load_prepared("mail", tmp_path / "prepared")
    assert (manifest.kind, manifest.input_shape, manifest.input_dtype) == ("text", (), "string")
    assert manifest.classes == ("eggs", "ham", "spam")
    assert manifest.class_counts["val"] == {"eggs": 2, "ham": 2, "spam": 2}
    texts = set(data.splits["train"].x) | set(data.splits["val"].x) | set(data.splits["test"].x)
    assert "ham example number 3,\nwith a comma" in texts


def test_drop_duplicates_keeps_each_text_once_before_splitting(tmp_path):
    rows = text_rows() + text_rows()[:7]  # seven texts twice, with the same labels
    write_csv(tmp_path / "raw" / "mail.csv", ["text", "label"], rows)
    config = {"source": "text_csv", "path": "mail.csv", "drop_duplicates": True}
    manifest = prepare_dataset("mail", config, tmp_path / "raw", tmp_path / "prepared")
    data = load_prepared("mail", tmp_path / "prepared")
    texts = [t for split in data.splits.values() for t in split.x]
    assert len(texts) == len(set(texts)) == 30 and sum(manifest.splits.values()) == 30
    assert manifest.stats["duplicates_dropped"] == 7.0


def test_duplicates_stay_unless_dropped(tmp_path):
    write_csv(tmp_path / "raw" / "mail.csv", ["text", "label"], text_rows() + text_rows()[:7])
    config = {"source": "text_csv", "path": "mail.csv"}
    manifest = prepare_dataset("mail", config, tmp_path / "raw", tmp_path / "prepared")
    assert sum(manifest.splits.values()) == 37 and "duplicates_dropped" not in manifest.stats


def test_a_duplicated_text_with_two_labels_is_named(tmp_path):
    rows = [*text_rows(), ["ham example number 3,\nwith a comma", "spam"]]
    write_csv(tmp_path / "raw" / "mail.csv", ["text", "label"], rows)
    config = {"source": "text_csv", "path": "mail.csv", "drop_duplicates": True}
    message = prepare_expecting(tmp_path, config)
    assert "appears with labels 'ham' and 'spam'" in message


def test_series_csv_is_sorted_by_time_and_split_chronologically(tmp_path):
    times = np.random.default_rng(0).permutation(100)
    write_csv(tmp_path / "s.csv", ["t", "v"], [[int(t), float(t)] for t in times])
    config = {
        "source": "timeseries_csv",
        "path": str(tmp_path / "s.csv"),
        "value_column": "v",
        "time_column": "t",
        "window": 5,
        "horizon": 3,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
    }
    manifest = prepare_dataset("s", config, tmp_path / "raw", tmp_path / "prepared")
    data = load_prepared("s", tmp_path / "prepared").splits
    assert manifest.input_shape == (5, 1) and manifest.target_shape == (3,)
    for split in data.values():  # each window is 5 consecutive values, then 3 targets
        np.testing.assert_array_equal(split.y[:, 0], split.x[:, -1, 0] + 1)
    # values are their own time: train targets < 60 <= val targets < 80 <= test targets
    assert data["train"].y.max() < 60 <= data["val"].y.min()
    assert data["val"].y.max() < 80 <= data["test"].y.min()
    assert data["test"].y.max() == 99


def test_tabular_csv_regression(tmp_path):
    rows = [[i, i * 2.0, i * 0.5] for i in range(40)]
    write_csv(tmp_path / "raw" / "t.csv", ["a", "b", "price"], rows)
    config = {"source": "tabular_csv", "path": "t.csv", "label_column": "price"}
    config["task"] = "regression"
    manifest = prepare_dataset("t", config, tmp_path / "raw", tmp_path / "prepared")
    split = load_prepared("t", tmp_path / "prepared").splits["train"]
    assert (manifest.task, manifest.input_shape, manifest.classes) == ("regression", (2,), ())
    np.testing.assert_allclose(split.y, split.x[:, 0] * 0.5)
    assert manifest.feature_names == ("a", "b")


def test_tabular_csv_records_its_feature_columns_in_the_order_of_x(tmp_path):
    rows = [[i * 3.0, "yes" if i % 2 else "no", i * 1.0] for i in range(40)]
    write_csv(tmp_path / "raw" / "t.csv", ["width", "label", "age"], rows)
    config = {"source": "tabular_csv", "path": "t.csv", "label_column": "label"}
    manifest = prepare_dataset("t", config, tmp_path / "raw", tmp_path / "prepared")
    assert manifest.feature_names == ("width", "age")
    split = load_prepared("t", tmp_path / "prepared").splits["train"]
    np.testing.assert_allclose(split.x[:, 0], split.x[:, 1] * 3.0)  # width = 3 * age
    assert load_prepared("t", tmp_path / "prepared").manifest == manifest


def prepare_expecting(tmp_path: Path, config: dict, error: type = DataError) -> str:
    with pytest.raises(error) as info:
        prepare_dataset("bad", config, tmp_path / "raw", tmp_path / "prepared")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_missing_path_is_named(tmp_path):
    message = prepare_expecting(tmp_path, {"source": "text_csv", "path": "nope.csv"})
    assert "nope.csv does not exist" in message


def test_an_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "raw" / "empty").mkdir(parents=True)
    config = {"source": "image_folder", "path": "empty", "image_size": [8, 8]}
    assert "has no class subfolders" in prepare_expecting(tmp_path, config)


def test_a_non_image_file_in_a_class_folder_is_named(tmp_path):
    make_image_folder(tmp_path / "raw" / "pets")
    (tmp_path / "raw" / "pets" / "dog" / "notes.txt").write_text("good dog")
    config = {"source": "image_folder", "path": "pets", "image_size": [8, 8]}
    message = prepare_expecting(tmp_path, config)
    assert "notes.txt is not an image" in message


def test_a_csv_without_the_required_columns_names_them(tmp_path):
    write_csv(tmp_path / "raw" / "m.csv", ["body", "label"], [["x", "a"], ["y", "b"]])
    message = prepare_expecting(tmp_path, {"source": "text_csv", "path": "m.csv"})
    assert "lacks the column(s) text" in message


def test_a_series_shorter_than_window_plus_horizon_is_refused(tmp_path):
    write_csv(tmp_path / "raw" / "s.csv", ["v"], [[1.0]] * 10)
    config = {"source": "timeseries_csv", "path": "s.csv", "value_column": "v", "window": 9}
    config["horizon"] = 2
    assert "fewer than window + horizon = 11" in prepare_expecting(tmp_path, config)


def test_an_unknown_source_lists_the_known_ones(tmp_path):
    message = prepare_expecting(tmp_path, {"source": "sklearn_iris"})
    assert "unknown source 'sklearn_iris'" in message and "image_folder" in message


def test_an_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="known datasets: .*digits"):
        resolve_dataset_config("irises", {"pets": {"source": "image_folder"}})


def test_config_mistakes_are_config_errors(tmp_path):
    assert "datasets.bad.path is required" in prepare_expecting(
        tmp_path, {"source": "text_csv"}, ConfigError
    )
    assert "unknown key datasets.bad.windw" in prepare_expecting(
        tmp_path, {"source": "statsmodels_sunspots", "windw": 3}, ConfigError
    )
    fractions = {"source": "sklearn_digits", "val_fraction": 0.5, "test_fraction": 0.5}
    assert "val_fraction + test_fraction" in prepare_expecting(tmp_path, fractions, ConfigError)


def test_declared_entries_extend_or_replace_builtin_defaults():
    extended = resolve_dataset_config("sunspots", {"sunspots": {"window": 8}})
    assert (extended.source, extended.window, extended.horizon) == ("statsmodels_sunspots", 8, 1)
    replaced = resolve_dataset_config("digits", {"digits": {"source": "text_csv", "path": "d.csv"}})
    assert replaced.source == "text_csv"


# tabular_csv and text_csv stream in two passes (data/csv_table.py): the same split as the
# in-memory path gave, the same bytes every time, and memory bounded by a batch of rows.


def in_memory_split(path: Path, label_column: str, task: str = "classification", **fields):
    """The (x, y) rows of each split as the in-memory path made them: every row read, labels
    indexed in sorted order, split stratified (or at random for regression)."""
    from kerasops.data.splits import random_split, stratified_split

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0] if c != label_column]
    x = [[row[c] for c in features] for row in rows]
    labels = [row[label_column] for row in rows]
    fractions = (fields.get("val_fraction", 0.15), fields.get("test_fraction", 0.15))
    seed = fields.get("seed", 42)
    if task == "regression":
        y = np.array(labels, dtype=np.float32)
        indices = random_split(len(y), *fractions, seed)
    else:
        y = np.searchsorted(np.array(sorted(set(labels))), np.array(labels)).astype(np.int32)
        indices = stratified_split(y, *fractions, seed)
    return {s: ([x[i] for i in chosen], y[chosen]) for s, chosen in indices.items()}


def assert_same_rows(split: str, x, y, expected_x, expected_y) -> None:
    """val and test: the rows in file order, as before; train: the same rows (as a multiset) in
    a shuffled order."""
    x = np.array([v.decode() if isinstance(v, bytes) else v for v in x], dtype=expected_x.dtype)
    if split != "train":
        np.testing.assert_array_equal(x, expected_x)
        np.testing.assert_array_equal(y, expected_y)
        return
    rows = sorted(zip(map(repr, x.tolist()), np.asarray(y).tolist(), strict=True))
    expected = sorted(zip(map(repr, expected_x.tolist()), expected_y.tolist(), strict=True))
    assert rows == expected and len(rows) > 1


def tabular_rows(count: int, seed: int = 0) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(count, 3)).round(4)
    return [[a, "nyx"[i % 3] if i % 4 else "y", b, c] for i, (a, b, c) in enumerate(values)]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_streamed_tabular_csv_splits_as_the_in_memory_path_did(tmp_path, task):
    rows = tabular_rows(300)
    if task == "regression":  # the target a number: 2 * f1 + f2
        rows = [[f1, 2 * f1 + f2, f2, f3] for f1, _, f2, f3 in rows]
    path = write_csv(tmp_path / "raw" / "t.csv", ["f1", "target", "f2", "f3"], rows)
    config = {"source": "tabular_csv", "path": "t.csv", "label_column": "target", "task": task}
    config.update(val_fraction=0.2, seed=7)
    manifest = prepare_dataset("t", config, tmp_path / "raw", tmp_path / "prepared")
    prepared = load_prepared("t", tmp_path / "prepared")
    expected = in_memory_split(path, "target", task, val_fraction=0.2, seed=7)
    for split, (x, y) in expected.items():
        got = prepared.splits[split]
        assert_same_rows(split, got.x, got.y, np.array(x, dtype=np.float32), y)
    assert manifest.input_shape == (3,) and sum(manifest.splits.values()) == 300
    if task == "classification":
        assert manifest.classes == ("n", "x", "y")
        counts = {s: np.bincount(y, minlength=3).tolist() for s, (_, y) in expected.items()}
        assert {s: list(c.values()) for s, c in manifest.class_counts.items()} == counts


def test_a_streamed_text_csv_splits_as_the_in_memory_path_did(tmp_path):
    rows = [[f"{label} text {i} " * (i % 5 + 1), label] for i, label in enumerate("ab" * 60)]
    rows = rows + rows[10:30]  # twenty texts twice, with their labels
    write_csv(tmp_path / "raw" / "m.csv", ["text", "label"], rows)
    config = {"source": "text_csv", "path": "m.csv", "drop_duplicates": True, "seed": 3}
    manifest = prepare_dataset("m", config, tmp_path / "raw", tmp_path / "prepared")
    prepared = load_prepared("m", tmp_path / "prepared")
    unique = write_csv(tmp_path / "unique.csv", ["text", "label"], rows[:120])
    for split, (x, y) in in_memory_split(unique, "label", seed=3).items():
        got = prepared.splits[split]
        assert_same_rows(split, got.x, got.y, np.array([text for (text,) in x], dtype=object), y)
    train_words = [len(t.split()) for t in prepared.splits["train"].x]
    assert manifest.stats == {
        "train_words_mean": float(np.mean(train_words)),
        "train_words_max": float(max(train_words)),
        "duplicates_dropped": 20.0,
    }


@pytest.mark.parametrize("kind", ["tabular", "text"])
def test_re_preparing_a_csv_gives_equal_bytes_and_hash(tmp_path, kind):
    from tests.test_data_shards import shard_bytes

    if kind == "tabular":
        write_csv(tmp_path / "raw" / "d.csv", ["f1", "label", "f2", "f3"], tabular_rows(2000))
        config = {"source": "tabular_csv", "path": "d.csv"}
    else:
        write_csv(tmp_path / "raw" / "d.csv", ["text", "label"], text_rows(200) * 2)
        config = {"source": "text_csv", "path": "d.csv", "drop_duplicates": True}
    config["shard_size_mb"] = 0.01  # several shards per split
    first = prepare_dataset("d", config, tmp_path / "raw", tmp_path / "one")
    second = prepare_dataset("d", config, tmp_path / "raw", tmp_path / "two")
    assert len(first.shards["train"]) > 1 and first == second
    assert shard_bytes(tmp_path / "one", "d") == shard_bytes(tmp_path / "two", "d")
    assert first.content_hash == load_prepared("d", tmp_path / "two").manifest.content_hash
    assert only_shards_and_manifest(tmp_path / "one", "d")


def longest_run(labels: np.ndarray) -> int:
    """The most equal labels in a row."""
    changes = np.flatnonzero(np.diff(labels)) + 1
    return int(np.diff(np.concatenate([[0], changes, [len(labels)]])).max())


def only_shards_and_manifest(root: Path, name: str) -> bool:
    """Nothing but the dataset's folder in `root` (no staging left), holding only its shards and
    manifest (no shuffle buckets left)."""
    names = {p.name for p in (root / name).iterdir()}
    return [p.name for p in root.iterdir()] == [name] and names == {"manifest.json"} | {
        n for n in names if n.endswith(".tfrecord")
    }


@pytest.mark.parametrize("bucket_bytes", [None, 4096])  # None: one bucket; 4096: about 30
@pytest.mark.parametrize("kind", ["tabular", "text"])
def test_a_csv_sorted_by_class_is_written_to_train_in_a_mixed_order(
    tmp_path, monkeypatch, kind, bucket_bytes
):
    from kerasops.data import external_shuffle

    if bucket_bytes is not None:
        monkeypatch.setattr(external_shuffle, "BUCKET_BYTES", bucket_bytes)
        monkeypatch.setattr(external_shuffle, "MAX_BUCKET_BYTES", 2 * bucket_bytes)
    if kind == "tabular":
        rows = sorted(tabular_rows(3000), key=lambda row: row[1])  # by its label
        path = write_csv(tmp_path / "raw" / "s.csv", ["f1", "label", "f2", "f3"], rows)
        config = {"source": "tabular_csv", "path": "s.csv"}
    else:
        path = write_csv(tmp_path / "raw" / "s.csv", ["text", "label"], text_rows(1000))
        config = {"source": "text_csv", "path": "s.csv"}
    first = prepare_dataset("s", config, tmp_path / "raw", tmp_path / "one")
    second = prepare_dataset("s", config, tmp_path / "raw", tmp_path / "two")
    splits = load_prepared("s", tmp_path / "one").splits
    train = splits["train"].y
    assert set(train[: len(train) // 10].tolist()) == {0, 1, 2}  # file order: one class
    assert longest_run(train) < 30  # file order: 525 or more
    for split in ("val", "test"):  # in file order, as before: each class in one run
        assert longest_run(splits[split].y) == max(first.class_counts[split].values())
    for split, (x, y) in in_memory_split(path, "label").items():
        if kind == "text":
            x = np.array([text for (text,) in x], dtype=object)
        else:
            x = np.array(x, dtype=np.float32)
        assert_same_rows(split, splits[split].x, splits[split].y, x, y)
    from tests.test_data_shards import shard_bytes

    assert first == second and first.content_hash == second.content_hash
    assert shard_bytes(tmp_path / "one", "s") == shard_bytes(tmp_path / "two", "s")
    assert only_shards_and_manifest(tmp_path / "one", "s")


@pytest.mark.parametrize(
    ("header", "rows", "config", "message"),
    [
        (
            ["a", "b", "label"],
            [[1, 2, "x"], [3, 4, "y"], [5, "five", "x"]],
            {"source": "tabular_csv"},
            "row 4, column b: 'five' is not a number; fix or drop it",
        ),
        (
            ["a", "label"],
            [[1, "x"], ["nan", "y"]],
            {"source": "tabular_csv"},
            "row 3, column a: 'nan' is not a number",
        ),
        (
            ["a", "price"],
            [[1, 2.0], [3, "?"]],
            {"source": "tabular_csv", "label_column": "price", "task": "regression"},
            "row 3, column price: '?' is not a number",
        ),
        (
            ["a", "b"],
            [[1, 2]],
            {"source": "tabular_csv"},
            "lacks the column(s) label (found: a, b); add a header row naming label",
        ),
        (["label"], [["x"]], {"source": "tabular_csv"}, "has no feature columns besides label"),
        (
            ["text", "label"],
            [["hi", "a"], ["ho", " "]],
            {"source": "text_csv"},
            "row 3 has an empty label; give every row a label",
        ),
        (["text", "label"], [["hi", "a"], ["ho"]], {"source": "text_csv"}, "row 3 has 1 of the"),
        (["text", "label"], [], {"source": "text_csv"}, "has a header but no rows; add examples"),
        (
            ["text", "label"],
            [["hi", "a"], ["ho", "a"]],
            {"source": "text_csv"},
            "found only the class ('a',); a classifier needs at least two",
        ),
    ],
)
def test_a_bad_csv_row_is_named_in_one_line(tmp_path, header, rows, config, message):
    write_csv(tmp_path / "raw" / "bad.csv", header, rows)
    assert message in prepare_expecting(tmp_path, {**config, "path": "bad.csv"})


def test_the_first_relabelled_duplicate_in_file_order_is_named(tmp_path):
    rows = [["one", "a"], ["two", "b"], ["three", "a"], ["two", "b"], ["three", "b"], ["one", "b"]]
    write_csv(tmp_path / "raw" / "m.csv", ["text", "label"], rows)
    config = {"source": "text_csv", "path": "m.csv", "drop_duplicates": True}
    message = prepare_expecting(tmp_path, config)
    assert message.startswith("the text 'three' appears with labels 'a' and 'b'")


MEMORY_CHILD = """
import json, sys
from pathlib import Path
from kerasops.data import prepare_dataset
from kerasops.data.shards import ShardWriter, serialize_example

root = Path(sys.argv[1])
warm = ShardWriter(root, "warm", 1 << 20)  # TensorFlow loaded and a writer used, before
warm.write(serialize_example(b"x", b"y"))
warm.close()


def status_mb(field):
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0]) / 1024


# the peak so far may be the imports' (a CI run read a lifetime peak 236 MB above the RSS after
# the imports, the same for both files): reset the high-water mark to the current RSS, so the
# peak read after is preparation's
Path("/proc/self/clear_refs").write_text("5")
before = status_mb("VmRSS")
prepare_dataset("big", json.loads(sys.argv[2]), root, root / "prepared")
peak = status_mb("VmHWM")
print(json.dumps({"before_mb": before, "peak_mb": peak}))
"""


def write_large_csv(path: Path, kind: str, count: int) -> int:
    """A generated CSV of `count` rows, written a row at a time; return its size in bytes."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    paragraphs = [" ".join(rng.choice(words, 300)) for _ in range(200)]  # ~1.7 KB each
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"] if kind == "text" else ["f1", "f2", "f3", "label"])
        for i in range(count):
            if kind == "text":
                writer.writerow([f"{i} {paragraphs[i % 200]}", "abc"[i % 3]])
            else:
                writer.writerow([i % 997, (i * 7) % 1009 / 10, i / 3, "abc"[i % 3]])
    return path.stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "count"), [("text", 120_000), ("tabular", 2_000_000)])
def test_preparing_a_large_csv_keeps_memory_bounded(tmp_path, kind, count):
    import json
    import os
    import subprocess
    import sys

    size = write_large_csv(tmp_path / "big.csv", kind, count)
    config = {"source": f"{kind}_csv", "path": "big.csv", "drop_duplicates": kind == "text"}
    if kind == "tabular":
        config.pop("drop_duplicates")
    # a clean environment: what earlier tests of this worker exported does not reach the child
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env=env,
    )
    memory = json.loads(run.stdout.strip().splitlines()[-1])
    grown = memory["peak_mb"] - memory["before_mb"]
    # the in-memory path held every row as a dict of str: more than the file's 200 MB of text,
    # or about 1 GB for the 2M tabular rows (benchmarks/data/csv_prepare.py measures both)
    assert size > (190 if kind == "text" else 50) * 2**20, size
    assert grown < 80, (memory, size)  # a batch of rows, 1-21 bytes per row, the writers and a
    # shuffle bucket (about 32 MiB, data/external_shuffle.py)
    manifest = json.loads((tmp_path / "prepared" / "big" / "manifest.json").read_text())
    assert sum(manifest["splits"].values()) == count
