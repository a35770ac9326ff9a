"""Built-in datasets: shapes, dtypes, counts, stratification and byte-stable preparation."""

from __future__ import annotations

import numpy as np
import pytest

from data import load_prepared, prepare_dataset, resolve_dataset_config

EXPECTED = {
    # name: (kind, input_shape, input_dtype, target_shape, total examples, classes)
    "digits": ("image", (8, 8, 1), "float32", (), 1797, tuple(str(d) for d in range(10))),
    "sunspots": ("timeseries", (20, 1), "float32", (1,), 289, ()),
    "bbc_news": (
        "text",
        (),
        "string",
        (),
        2225,
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
    first_bytes = (prepared_root / name / "train.npz").read_bytes()
    second = prepare_dataset(name, config, raw_root, prepared_root)

    assert (first.kind, first.input_shape, first.input_dtype) == (kind, input_shape, input_dtype)
    assert (first.target_shape, first.classes) == (target_shape, classes)
    assert sum(first.splits.values()) == total
    assert first.content_hash == second.content_hash
    assert (prepared_root / name / "train.npz").read_bytes() == first_bytes
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
    prepare_dataset("sunspots", resolve_dataset_config("sunspots", {}), raw_root, prepared_root)
    data = load_prepared("sunspots", prepared_root)
    series = np.concatenate([data.splits[s].y[:, 0] for s in ("train", "val", "test")])
    # consecutive windows: each target is the next window's last input
    train = data.splits["train"]
    np.testing.assert_array_equal(train.x[1:, -1, 0], train.y[:-1, 0])
    assert len(series) == 309 - 20
