"""Data validation: each check catches its problem in real prepared data, and only that one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from kerasops.data import (
    PreparedData,
    Split,
    load_prepared,
    prepare_dataset,
    resolve_dataset_config,
)
from kerasops.data.shards import write_split
from kerasops.data.validation import (
    ValidationConfig,
    ValidationError,
    load_reference,
    reference_dir,
    validate_prepared,
)
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps.validate import validate as validate_dataset
from tests.conftest import write_params


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> PreparedData:
    root = tmp_path_factory.mktemp("digits")
    config = resolve_dataset_config("digits", {})
    prepare_dataset("digits", config, root / "raw", root / "prepared")
    return load_prepared("digits", root / "prepared")


def with_split(prepared: PreparedData, name: str, x=None, y=None) -> PreparedData:
    split = prepared.splits[name]
    changed = Split(x=split.x if x is None else x, y=split.y if y is None else y)
    return dataclasses.replace(prepared, splits={**prepared.splits, name: changed})


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_real_data_passes_every_check_against_itself(digits):
    report = validate_prepared(digits, digits)
    assert report.passed and not report.warnings
    assert set(statuses(report)) == {
        "schema",
        "label_set",
        "missing_values",
        "class_balance",
        "split_leakage",
        "drift",
    }


def test_split_leakage_fails_naming_the_shared_examples(digits):
    test = digits.splits["test"]
    leaked_x = np.concatenate([digits.splits["train"].x[:20], test.x[20:]])
    report = validate_prepared(with_split(digits, "test", x=leaked_x), digits)
    assert statuses(report)["split_leakage"] == "fail"
    assert [c.name for c in report.failures] == ["split_leakage"]
    assert f"20 of {len(test.x)} test examples also in train" in report.failures[0].message
    lenient = ValidationConfig(max_leakage_fraction=0.5)
    report = validate_prepared(with_split(digits, "test", x=leaked_x), digits, lenient)
    assert report.passed and [c.name for c in report.warnings] == ["split_leakage"]


def test_missing_values_fail(digits):
    x = digits.splits["val"].x.copy()
    x[3, 0, 0, 0] = np.nan
    report = validate_prepared(with_split(digits, "val", x=x), digits)
    assert [c.name for c in report.failures] == ["missing_values"]
    assert "val x" in report.failures[0].message


def test_schema_and_label_set_are_compared_with_the_reference(digits):
    manifest = digits.manifest
    other = dataclasses.replace(
        digits, manifest=dataclasses.replace(manifest, input_shape=(4, 4, 1))
    )
    report = validate_prepared(digits, other)
    assert [c.name for c in report.failures] == ["schema"]
    assert "input_shape" in report.failures[0].message

    renamed = dataclasses.replace(
        digits, manifest=dataclasses.replace(manifest, classes=(*manifest.classes[:-1], "nine"))
    )
    report = validate_prepared(digits, renamed)
    assert "label_set" in [c.name for c in report.failures]
    assert "new: ['9']" in report.failures[0].message


def test_labels_outside_the_class_set_and_absent_classes_fail(digits):
    y = digits.splits["train"].y.copy()
    y[y == 3] = 4
    report = validate_prepared(with_split(digits, "train", y=y), None)
    assert [c.name for c in report.failures] == ["label_set"]
    assert "classes missing from train: 3" in report.failures[0].message


def test_class_imbalance_warns_but_passes(digits):
    train = digits.splits["train"]
    keep = (train.y != 0) | (np.cumsum(train.y == 0) <= 2)
    report = validate_prepared(with_split(digits, "train", x=train.x[keep], y=train.y[keep]), None)
    assert report.passed
    assert [c.name for c in report.warnings] == ["class_balance"]


def test_drift_warns_by_default_and_fails_when_configured(digits):
    train = digits.splits["train"]
    shifted = with_split(digits, "train", x=np.clip(train.x * 0.5 + 100.0, 0, 240))
    report = validate_prepared(shifted, digits)
    assert report.passed and statuses(report)["drift"] == "warn"
    strict = ValidationConfig(drift_fail_psi=0.2)
    report = validate_prepared(shifted, digits, strict)
    assert [c.name for c in report.failures] == ["drift"]
    assert "input values PSI" in report.failures[0].message


def test_failed_report_names_each_failed_check(digits):
    x = digits.splits["test"].x.copy()
    x[:30] = digits.splits["train"].x[:30]
    x[0, 0, 0, 0] = np.inf
    report = validate_prepared(with_split(digits, "test", x=x), digits)
    error = ValidationError(report)
    assert "missing_values" in str(error) and "split_leakage" in str(error)
    markdown = report.to_markdown()
    assert "FAILED" in markdown and "| split_leakage | fail |" in markdown


def test_validate_dataset_keeps_only_passed_versions_as_reference(project):
    params_path = write_params(
        project,
        pipeline={
            "datasets": ["digits"],
            "validation": {"per_dataset": {"digits": {"max_leakage_fraction": 0.0}}},
        },
    )
    params = load_params(params_path)
    prepared_root = params.path("prepared_data")
    prepare_dataset(
        "digits", resolve_dataset_config("digits", {}), params.path("raw_data"), prepared_root
    )
    first = validate_dataset(params, "digits")
    assert first.passed and first.reference_hash is None
    kept = load_reference(prepared_root, "digits")
    assert kept.manifest.content_hash == first.content_hash
    assert reference_dir(prepared_root, "digits") == project / "data" / "reference" / "digits"

    # a new version whose test split leaks: fails, names the check, keeps the old reference
    current = load_prepared("digits", prepared_root)
    leaked = current.splits["test"].x.copy()
    leaked[:10] = current.splits["train"].x[:10]
    encodings = current.manifest.encodings
    folder = prepared_root / "digits"
    (shard,) = write_split(folder, "test", leaked, current.splits["test"].y, encodings, 2**26)

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][shard.name] = shard.sha256
    (prepared_root / "digits" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValidationError, match="split_leakage"):
        validate_dataset(params, "digits")
    report = json.loads((project / "artifacts" / "validation" / "digits.json").read_text())
    assert report == {"passed": False, "failures": 1, "warnings": 0}
    assert "| split_leakage | fail |" in (project / "artifacts/validation/digits.md").read_text()
    assert load_reference(prepared_root, "digits").manifest.content_hash == first.content_hash


def test_validation_thresholds_are_strict(project):
    path = write_params(project, pipeline={"validation": {"max_leakage_fraktion": 0.1}})
    with pytest.raises(Exception, match="pipeline.validation.max_leakage_fraktion"):
        load_params(path)  # typed when params.yaml is read


def test_a_large_table_or_text_split_is_summarized_in_bounded_samples(tmp_path, monkeypatch):
    import kerasops.data.validation as validation

    rng = np.random.default_rng(0)
    rows = [f"{a:.4f},{b:.4f},{'ab'[i % 2]}" for i, (a, b) in enumerate(rng.normal(size=(3000, 2)))]
    (tmp_path / "table.csv").write_text("f1,f2,label\n" + "\n".join(rows) + "\n")
    texts = [f"words {'x ' * (i % 7)}{i},{'ab'[i % 2]}" for i in range(3000)]
    (tmp_path / "texts.csv").write_text("text,label\n" + "\n".join(texts) + "\n")
    root = tmp_path / "prepared"
    prepare_dataset("table", {"source": "tabular_csv", "path": "table.csv"}, tmp_path, root)
    prepare_dataset("texts", {"source": "text_csv", "path": "texts.csv"}, tmp_path, root)
    monkeypatch.setattr(validation, "MAX_DRIFT_SAMPLE", 1000)  # train: 2100 rows, 2 features
    for name, per_row in (("table", 2), ("texts", 1)):
        prepared = load_prepared(name, root)
        samples = validation.feature_samples(prepared)
        stride = -(-2100 * per_row // 1000)
        assert {len(v) for v in samples.values()} == {len(range(0, 2100, stride))}, name
        x = np.asarray(prepared.splits["train"].x)
        first = samples["feature 0"] if name == "table" else samples["text length (words)"]
        every = x[::stride, 0] if name == "table" else [len(t.split()) for t in x[::stride]]
        np.testing.assert_array_equal(first, np.asarray(every, dtype=float))
        report = validate_prepared(prepared, prepared)
        assert report.passed, report.summary()
        digests = validation.summarize(prepared, "train").digests
        assert digests.dtype == np.uint64 and len(digests) == 2100
