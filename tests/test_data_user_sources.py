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
