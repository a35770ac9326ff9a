"""Prepared files: manifest round trip, hash verification and atomic replacement."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import kerasops.data.shards
from kerasops.data import DataError, Manifest, load_prepared, prepare_dataset
from kerasops.data.manifest import content_hash


def write_text_csv(path: Path, n_per_class: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{label} text {i},{label}" for label in ("a", "b") for i in range(n_per_class)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def prepared(tmp_path):
    write_text_csv(tmp_path / "raw" / "notes.csv")
    config = {"source": "text_csv", "path": "notes.csv", "seed": 1}
    manifest = prepare_dataset("notes", config, tmp_path / "raw", tmp_path / "prepared")
    return manifest, tmp_path / "prepared"


def test_manifest_round_trips_through_json(prepared):
    manifest, root = prepared
    assert Manifest.read(root / "notes" / "manifest.json") == manifest
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert manifest.content_hash == content_hash(manifest.files)
    assert manifest.config["source"] == "text_csv" and manifest.config["seed"] == 1
    assert manifest.feature_names == ()  # a text dataset has no feature columns


def test_a_manifest_written_before_feature_names_still_loads(prepared):
    manifest, root = prepared
    values = manifest.to_dict()
    del values["feature_names"]
    assert Manifest.from_dict(values) == manifest
    named = dataclasses.replace(manifest, feature_names=("width", "age"))
    assert Manifest.from_dict(json.loads(json.dumps(named.to_dict()))) == named


def test_a_modified_file_is_detected(prepared):
    _, root = prepared
    train = root / "notes" / "train-00000.tfrecord"
    content = bytearray(train.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one flipped byte
    train.write_bytes(bytes(content))
    with pytest.raises(
        DataError, match="train-00000.tfrecord no longer matches its manifest hash; run "
    ):
        load_prepared("notes", root)


def test_a_dataset_that_was_never_prepared_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DataError, match="'digits' is not prepared .*kerasops prepare digits"):
        load_prepared("digits", tmp_path)


def test_a_failed_prepare_keeps_the_previous_version(prepared, tmp_path, monkeypatch):
    manifest, root = prepared

    real_write = kerasops.data.shards.ShardWriter.write

    def fail_midway(writer, record: bytes) -> None:
        if writer.split == "val":
            raise OSError("disk full")
        real_write(writer, record)

    monkeypatch.setattr(kerasops.data.shards.ShardWriter, "write", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset("notes", dict(manifest.config), tmp_path / "raw", root)
    assert load_prepared("notes", root).manifest == manifest
    assert sorted(p.name for p in root.iterdir()) == ["notes"]  # no temporary folders left


def test_a_bad_source_does_not_touch_the_previous_version(prepared, tmp_path):
    manifest, root = prepared
    with pytest.raises(DataError):
        prepare_dataset("notes", {"source": "text_csv", "path": "gone.csv"}, tmp_path / "raw", root)
    assert load_prepared("notes", root).manifest == manifest


def test_a_dataset_name_must_be_a_plain_folder_name(tmp_path):
    with pytest.raises(DataError, match="not a plain folder name"):
        prepare_dataset("../evil", {"source": "sklearn_digits"}, tmp_path, tmp_path)
