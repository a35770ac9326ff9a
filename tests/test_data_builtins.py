"""Built-in datasets: shapes, dtypes, counts, stratification and byte-stable preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kerasops.data import load_prepared, prepare_dataset, resolve_dataset_config

EXPECTED = {
    # name: (kind, input_shape, input_dtype, target_shape, total examples, classes)
    "digits": ("image", (8, 8, 1), "float32", (), 1797, tuple(str(d) for d in range(10))),
    "sunspots": ("timeseries", (20, 1), "float32", (1,), 289, ()),
    "bbc_news": (
        "text",
        (),
        "string",
        (),
        2127,  # 2,225 articles, 98 of them repeated verbatim and kept once
        ("business", "entertainment", "politics", "sports", "tech"),
    ),
    "breast_cancer": ("tabular", (30,), "float32", (), 569, ("benign", "malignant")),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("builtins")
    return root / "raw", root / "prepared"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_prepares_with_expected_shapes_and_a_stable_hash(name, roots):
    raw_root, prepared_root = roots
    kind, input_shape, input_dtype, target_shape, total, classes = EXPECTED[name]
    config = resolve_dataset_config(name, {})
    first = prepare_dataset(name, config, raw_root, prepared_root)
    first_bytes = (prepared_root / name / "train-00000.tfrecord").read_bytes()
    second = prepare_dataset(name, config, raw_root, prepared_root)

    assert (first.kind, first.input_shape, first.input_dtype) == (kind, input_shape, input_dtype)
    assert (first.target_shape, first.classes) == (target_shape, classes)
    assert sum(first.splits.values()) == total
    assert first.content_hash == second.content_hash
    assert (prepared_root / name / "train-00000.tfrecord").read_bytes() == first_bytes
    data = load_prepared(name, prepared_root)
    for split, arrays in data.splits.items():
        assert arrays.x.shape == (first.splits[split], *input_shape)
        assert arrays.y.shape == (first.splits[split], *target_shape)
        assert arrays.x.dtype == (object if input_dtype == "string" else np.float32)


def test_digits_are_ordinary_8_bit_pngs_and_materialize_idempotently(roots):
    raw_root, prepared_root = roots
    prepare_dataset("digits", resolve_dataset_config("digits", {}), raw_root, prepared_root)
    pngs = sorted((raw_root / "digits").glob("*/*.png"))
    times = {p: p.stat().st_mtime_ns for p in pngs}
    manifest = prepare_dataset(
        "digits", resolve_dataset_config("digits", {}), raw_root, prepared_root
    )
    assert len(pngs) == 1797
    assert {p: p.stat().st_mtime_ns for p in pngs} == times
    assert manifest.stats["pixel_max"] == 240.0


def test_breast_cancer_names_sklearns_features_in_the_order_of_x(roots):
    from sklearn.datasets import load_breast_cancer

    raw_root, prepared_root = roots
    config = resolve_dataset_config("breast_cancer", {})
    manifest = prepare_dataset("breast_cancer", config, raw_root, prepared_root)
    assert manifest.feature_names == tuple(load_breast_cancer().feature_names)
    assert len(manifest.feature_names) == manifest.input_shape[0]


def test_classification_splits_are_stratified(roots):
    raw_root, prepared_root = roots
    manifest = prepare_dataset(
        "digits", resolve_dataset_config("digits", {}), raw_root, prepared_root
    )
    for cls in manifest.classes:
        total = sum(manifest.class_counts[s][cls] for s in ("train", "val", "test"))
        assert manifest.class_counts["test"][cls] == round(total * 0.15)
        assert manifest.class_counts["val"][cls] == round(total * 0.15)


def test_a_different_seed_gives_another_split(roots):
    raw_root, prepared_root = roots
    base = prepare_dataset("digits", resolve_dataset_config("digits", {}), raw_root, prepared_root)
    other = resolve_dataset_config("digits", {"digits": {"seed": 7}})
    assert prepare_dataset("digits", other, raw_root, prepared_root).content_hash != (
        base.content_hash
    )


def test_sunspot_windows_are_chronological(roots):
    raw_root, prepared_root = roots
    config = resolve_dataset_config("sunspots", {})
    prepare_dataset("sunspots", config, raw_root, prepared_root)
    written = (raw_root / "sunspots" / "sunspots.csv").stat().st_mtime_ns
    prepare_dataset("sunspots", config, raw_root, prepared_root)
    assert (raw_root / "sunspots" / "sunspots.csv").stat().st_mtime_ns == written  # idempotent
    data = load_prepared("sunspots", prepared_root)
    raw = (raw_root / "sunspots" / "sunspots.csv").read_text().splitlines()[1:]
    series = np.array([float(line.split(",")[1]) for line in raw], dtype=np.float32)
    targets = np.concatenate([data.splits[s].y[:, 0] for s in ("train", "val", "test")])
    # train, then val, then test targets: every value after the first window, once, in order
    np.testing.assert_array_equal(targets, series[20:])
    offset = 0
    for split in ("train", "val", "test"):  # window i ends right before its target
        x = data.splits[split].x[:, :, 0]
        for i in range(len(x)):
            np.testing.assert_array_equal(x[i], series[offset + i : offset + i + 20])
        offset += len(x)


def test_builtin_defaults_are_complete_source_configs():
    from kerasops.data import BUILTIN_DATASETS, parse_source_config

    for name, defaults in BUILTIN_DATASETS.items():
        assert parse_source_config(defaults).to_dict() == defaults, name


def test_importing_data_loads_no_service_library():
    import os
    import subprocess
    import sys

    code = (
        "import sys, data; heavy = {'prefect', 'mlflow'}; print(sorted(heavy & set(sys.modules)))"
    )
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_bbc_news_has_no_text_in_two_splits(roots):
    raw_root, prepared_root = roots
    config = resolve_dataset_config("bbc_news", {})
    manifest = prepare_dataset("bbc_news", config, raw_root, prepared_root)
    splits = load_prepared("bbc_news", prepared_root).splits
    train = set(splits["train"].x)
    assert not train & set(splits["val"].x) and not train & set(splits["test"].x)
    assert manifest.stats["duplicates_dropped"] == 98.0
