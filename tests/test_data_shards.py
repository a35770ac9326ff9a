"""Prepared shards: deterministic bytes, streaming statistics, bad input, killed preparation,
and tf.data pipelines over them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import kerasops.data.image_folder
from kerasops.data import DataError, load_prepared, make_tf_dataset, prepare_dataset
from kerasops.data.photos import CLASSES, generate_photo_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return generate_photo_folder(tmp_path_factory.mktemp("raw") / "photos", 90, size=40, seed=3)


def photo_config(photos: Path, **extra) -> dict:
    return {"source": "image_folder", "path": str(photos), "image_size": [32, 32], **extra}


def shard_bytes(root: Path, name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / name).glob("*.tfrecord"))}


def test_the_photo_generator_is_deterministic_and_labels_by_colour(tmp_path, photos):
    again = generate_photo_folder(tmp_path / "again", 90, size=40, seed=3)
    for label in CLASSES:
        names = sorted(p.name for p in (photos / label).iterdir())
        assert len(names) == 30
        assert all(
            (photos / label / n).read_bytes() == (again / label / n).read_bytes() for n in names
        )
    from PIL import Image

    def red_minus_blue(label: str) -> float:
        pixels = [np.asarray(Image.open(p), dtype=float) for p in (photos / label).iterdir()]
        return float(np.mean([(p[..., 0] - p[..., 2]).mean() for p in pixels]))

    assert red_minus_blue("warm") > red_minus_blue("grey") > red_minus_blue("cool")


def test_re_preparation_gives_equal_bytes_in_process_and_on_a_pool(tmp_path, photos, monkeypatch):
    config = photo_config(photos, shard_size_mb=0.02)  # ~20 KB: several shards per split
    first = prepare_dataset("photos", config, tmp_path, tmp_path / "one", workers=1)
    monkeypatch.setattr(kerasops.data.image_folder, "MIN_POOL_IMAGES", 0)
    second = prepare_dataset("photos", config, tmp_path, tmp_path / "two", workers=2)
    assert len(first.shards["train"]) > 1
    assert shard_bytes(tmp_path / "one", "photos") == shard_bytes(tmp_path / "two", "photos")
    assert first == second
    names = {f for split in first.shards.values() for f in split}
    assert names == set(first.files) and sum(first.splits.values()) == 90
    again = prepare_dataset("photos", config, tmp_path, tmp_path / "one", workers=1)
    assert again.content_hash == first.content_hash
    assert (tmp_path / "one" / "photos" / "manifest.json").read_bytes() == (
        tmp_path / "two" / "photos" / "manifest.json"
    ).read_bytes()


def test_a_pool_started_beside_other_threads_comes_from_a_forkserver(tmp_path, photos, monkeypatch):
    """Forking beside a running Python thread can copy a lock it holds; the pool then comes from
    a forkserver, and gives the same bytes as in-process preparation."""
    from kerasops.data.image_folder import pool_context

    config = photo_config(photos, shard_size_mb=0.02)
    first = prepare_dataset("photos", config, tmp_path, tmp_path / "one", workers=1)
    monkeypatch.setattr(kerasops.data.image_folder, "MIN_POOL_IMAGES", 0)
    stop = threading.Event()
    beside = threading.Thread(target=stop.wait, daemon=True)
    beside.start()
    try:
        assert pool_context().get_start_method() == "forkserver"
        second = prepare_dataset("photos", config, tmp_path, tmp_path / "two", workers=2)
    finally:
        stop.set()
        beside.join()
    assert first == second
    assert shard_bytes(tmp_path / "one", "photos") == shard_bytes(tmp_path / "two", "photos")


def test_pool_workers_end_on_sigterm_under_a_parents_handler(monkeypatch):
    """A Prefect flow run installs a SIGTERM handler, which forked workers inherit;
    `Pool.terminate` signals the workers, then waits for each, and hung (in CI) on one that
    kept waiting for work. The workers take SIGTERM's default action again."""
    import multiprocessing
    import signal

    from kerasops.data.image_folder import image_pool

    class Plan:  # the one thing image_pool reads of a plan
        count = 5000

    def catches_sigterm(pid: int) -> bool:  # /proc's mask of the signals a process catches
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(status.split("SigCgt:")[1].split()[0], 16)
        return bool(caught & (1 << (signal.SIGTERM - 1)))

    monkeypatch.setattr(
        kerasops.data.image_folder, "pool_context", lambda: multiprocessing.get_context("fork")
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        pool = image_pool(Plan(), workers=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        deadline = time.monotonic() + 10  # each worker runs the initializer as it starts
        while any(catches_sigterm(p.pid) for p in pool._pool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [catches_sigterm(p.pid) for p in pool._pool] == [False, False]
    finally:
        pool.terminate()


def test_streaming_statistics_equal_the_in_memory_ones(tmp_path, photos):
    manifest = prepare_dataset("photos", photo_config(photos), tmp_path, tmp_path / "prepared")
    prepared = load_prepared("photos", tmp_path / "prepared")
    train = prepared.splits["train"].x.astype(np.float64)  # (N, 32, 32, 3) decoded from shards
    assert train.shape == (manifest.splits["train"], 32, 32, 3)
    assert manifest.stats["pixel_mean"] == pytest.approx(train.mean(), rel=1e-9)
    assert manifest.stats["pixel_std"] == pytest.approx(train.std(), rel=1e-9)
    every = max(prepared.splits[s].x.max() for s in ("train", "val", "test"))
    assert manifest.stats["pixel_max"] == every
    for split, counts in manifest.class_counts.items():
        labels = prepared.splits[split].y
        assert counts == {c: int((labels == i).sum()) for i, c in enumerate(manifest.classes)}


def test_digits_shards_decode_to_the_pixels_of_the_pngs(tmp_path):
    from kerasops.data import resolve_dataset_config
    from kerasops.data.readers import read_image

    raw, root = tmp_path / "raw", tmp_path / "prepared"
    manifest = prepare_dataset("digits", resolve_dataset_config("digits", {}), raw, root)
    test = load_prepared("digits", root).splits["test"]
    pngs = sorted((raw / "digits").glob("*/*.png"))
    by_pixels = {read_image(p, (8, 8), "grayscale").tobytes(): p.parent.name for p in pngs}
    assert manifest.encodings == {"x": "image", "y": "int32"}
    for x, y in zip(test.x[:20], test.y[:20], strict=True):
        assert by_pixels[x[..., 0].tobytes()] == manifest.classes[y]


def corrupt_folder(tmp_path: Path, photos: Path) -> Path:
    folder = tmp_path / "corrupt"
    for label in CLASSES:
        (folder / label).mkdir(parents=True)
        for p in sorted((photos / label).iterdir())[:8]:
            (folder / label / p.name).write_bytes(p.read_bytes())
    good = (folder / "warm" / sorted(p.name for p in (folder / "warm").iterdir())[0]).read_bytes()
    (folder / "warm" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "cool" / "notes.png").write_text("not an image")
    return folder


def test_a_corrupt_image_is_named_or_skipped_and_listed(tmp_path, photos):
    folder = corrupt_folder(tmp_path, photos)
    with pytest.raises(DataError, match=r"cannot be read as an image .*skip_corrupt: true") as err:
        prepare_dataset("bad", photo_config(folder), tmp_path, tmp_path / "prepared")
    assert "notes.png" in str(err.value) or "truncated.jpg" in str(err.value)
    assert "\n" not in str(err.value)
    config = photo_config(folder, skip_corrupt=True)
    manifest = prepare_dataset("bad", config, tmp_path, tmp_path / "prepared")
    assert manifest.skipped == ("cool/notes.png", "warm/truncated.jpg")
    assert manifest.stats["skipped_files"] == 2 and sum(manifest.splits.values()) == 24


KILLER = """
import os, signal, sys
import kerasops.data.shards as shards
from kerasops.data import prepare_dataset
real, written = shards.ShardWriter.write, []
def write(self, record):
    real(self, record)
    written.append(1)
    if len(written) == 20:  # midway through the train split
        os.kill(os.getpid(), signal.SIGKILL)
shards.ShardWriter.write = write
config = {"source": "image_folder", "path": sys.argv[1], "image_size": [24, 24]}
prepare_dataset("photos", config, sys.argv[2], sys.argv[2], workers=1)
"""


def test_a_killed_preparation_leaves_the_previous_version_intact(tmp_path, photos):
    root = tmp_path / "prepared"
    before = prepare_dataset("photos", photo_config(photos), tmp_path, root, workers=1)
    run = subprocess.run([sys.executable, "-c", KILLER, str(photos), str(root)], timeout=120)
    assert run.returncode == -9
    assert [p.name for p in root.glob(".photos.tmp-*")]  # its half-written folder
    assert load_prepared("photos", root).manifest == before  # the old version, verified
    prepare_dataset("photos", photo_config(photos), tmp_path, root, workers=1)
    assert sorted(p.name for p in root.iterdir()) == ["photos"]


def test_a_modified_image_shard_is_caught_by_its_hash(tmp_path, photos):
    root = tmp_path / "prepared"
    prepare_dataset("photos", photo_config(photos), tmp_path, root)
    shard = root / "photos" / "val-00000.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match=r"val-00000.tfrecord no longer matches its manifest hash"):
        load_prepared("photos", root)


def epoch_labels(split, seed: int, buffer: int) -> list[int]:
    dataset = make_tf_dataset(split, 8, True, seed, cache="none", shuffle_buffer=buffer)
    return [int(v) for _, y in dataset for v in y.numpy()]


def test_the_streamed_order_is_seeded_and_covers_each_example_once(tmp_path, photos):
    config = photo_config(photos, shard_size_mb=0.02)
    prepare_dataset("photos", config, tmp_path, tmp_path / "prepared")
    train = load_prepared("photos", tmp_path / "prepared").splits["train"]
    first, again = epoch_labels(train, 1, 16), epoch_labels(train, 1, 16)
    assert first == again and first != epoch_labels(train, 2, 16)
    assert sorted(first) == sorted(train.y.tolist())
    batch_x, batch_y = next(iter(make_tf_dataset(train, 8, False)))
    assert batch_x.shape == (8, 32, 32, 3) and batch_x.dtype.name == "float32"
    assert batch_y.numpy().tolist() == train.y[:8].tolist()
    with pytest.raises(DataError, match="shuffle_buffer must be at least 1"):
        make_tf_dataset(train, 8, True, shuffle_buffer=0)


def test_the_streamed_shuffle_buffer_is_bounded_in_bytes_at_the_mean_example_size(tmp_path, photos):
    from kerasops.data.pipeline import streamed_buffer_size

    config = photo_config(photos, shard_size_mb=0.02)
    prepare_dataset("photos", config, tmp_path, tmp_path / "prepared")
    spec = load_prepared("photos", tmp_path / "prepared").splits["train"].shards
    stored = sum(f.stat().st_size for f in spec.files)
    assert len(spec.files) > 1 and 0 < spec.mean_record_bytes < stored / spec.count
    ten = 10 * spec.mean_record_bytes / 2**20  # MiB of ten mean examples
    assert streamed_buffer_size(spec, 10_000, 64) == spec.count  # a small split: whole
    assert streamed_buffer_size(spec, 10_000, ten) == 10
    assert streamed_buffer_size(spec, 7, ten) == 7
    assert streamed_buffer_size(spec, 10_000, 1e-9) == 1
    with pytest.raises(DataError, match="shuffle_buffer_mb must be positive"):
        make_tf_dataset(load_prepared("photos", tmp_path / "prepared").splits["train"], 8, True,
                        shuffle_buffer_mb=0)  # fmt: skip


def test_auto_caches_the_decoded_uint8_split_only_within_its_byte_bound(tmp_path, photos):
    from kerasops.data.pipeline import cache_target

    prepare_dataset("photos", photo_config(photos), tmp_path, tmp_path / "prepared")
    train = load_prepared("photos", tmp_path / "prepared").splits["train"]
    decoded = train.shards.decoded_bytes
    assert decoded == train.shards.count * (32 * 32 * 3 + 4)  # uint8 pixels, an int32 label
    assert cache_target("auto", decoded, decoded / 2**20) == ""
    assert cache_target("auto", decoded, decoded / 2**20 - 0.001) is None
    assert cache_target("auto", decoded, 0) is None and cache_target("memory", decoded, 0) == ""
    cached = make_tf_dataset(train, 8, True, 3, cache="auto")
    streamed = make_tf_dataset(train, 8, True, 3, cache="auto", cache_mb=0)
    for dataset in (cached, streamed):
        assert dataset.element_spec[0].dtype.name == "float32"
    epochs = [[(x.numpy(), y.numpy()) for x, y in cached] for _ in range(2)]
    again = [(x.numpy(), y.numpy()) for x, y in make_tf_dataset(train, 8, True, 3)]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epochs[0], again, strict=True))
    assert not np.array_equal(epochs[0][0][1], epochs[1][0][1])  # reshuffled each epoch
    pixels = lambda d: np.sort(np.concatenate([x.reshape(len(x), -1) for x, _ in d]), axis=0)  # noqa: E731
    streamed_epoch = [(x.numpy(), y.numpy()) for x, y in streamed]
    assert np.array_equal(pixels(epochs[0]), pixels(streamed_epoch))  # the same examples
    assert np.array_equal(pixels(epochs[0]), np.sort(train.x.reshape(len(train), -1), axis=0))


def test_the_input_byte_bounds_are_validated_train_keys():
    from kerasops.errors import ConfigError
    from kerasops.models.training import TrainConfig

    train = TrainConfig.from_dict({"shuffle_buffer_mb": 32, "input_cache_mb": 0})
    assert (train.shuffle_buffer_mb, train.input_cache_mb) == (32.0, 0.0)
    assert TrainConfig().to_dict()["shuffle_buffer_mb"] == 64.0  # logged with the train keys
    for bad, message in (
        ({"shuffle_buffer_mb": 0}, "train.shuffle_buffer_mb must be positive"),
        ({"input_cache_mb": -1}, "train.input_cache_mb must be >= 0"),
        ({"shuffle_buffer_mb": "lots"}, "shuffle_buffer_mb"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(bad)


def test_text_splits_round_trip_through_shards(tmp_path):
    csv = tmp_path / "notes.csv"
    rows = [f"note {i} über {label},{label}" for label in ("a", "b") for i in range(10)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    manifest = prepare_dataset(
        "notes", {"source": "text_csv", "path": str(csv)}, tmp_path, tmp_path
    )
    train = load_prepared("notes", tmp_path).splits["train"]
    assert manifest.encodings == {"x": "string", "y": "int32"}
    assert train.x.dtype == object and all(isinstance(t, str) and "über" in t for t in train.x)
    x, _ = next(iter(make_tf_dataset(train, 4, False)))
    assert x.dtype.name == "string"


def test_a_model_trained_from_shards_matches_one_trained_from_arrays(tmp_path, photos):
    import keras

    from kerasops.data.prepared import Split
    from kerasops.models.training import TrainConfig, compile_model, fit_on

    prepare_dataset("photos", photo_config(photos, val_fraction=0.2), tmp_path, tmp_path / "p")
    splits = load_prepared("photos", tmp_path / "p").splits
    in_memory = {s: Split(splits[s].x, splits[s].y) for s in ("train", "val")}
    train = TrainConfig(epochs=10, batch_size=8, learning_rate=1e-2, seed=0, patience=10)

    def accuracy(train_split: Split, val_split: Split) -> float:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(8, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
        compile_model(model, "classification", train)
        fit_on(model, train_split, None, train, [])
        predicted = model.predict(val_split.x, verbose=0).argmax(axis=1)
        return float(np.mean(predicted == val_split.y))

    streamed = accuracy(splits["train"], splits["val"])
    from_arrays = accuracy(in_memory["train"], in_memory["val"])
    assert streamed > 0.6 and from_arrays > 0.6, (streamed, from_arrays)  # chance: 1/3
    assert abs(streamed - from_arrays) <= 0.15


@pytest.mark.slow
def test_shards_round_trip_through_a_dvc_remote(tmp_path, photos):
    from kerasops.pipelines.tracking.lineage import dvc_hash

    def dvc(*args: str) -> None:
        command = [sys.executable, "-m", "dvc", *args]
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=300)

    root = tmp_path / "data" / "prepared"
    manifest = prepare_dataset("photos", photo_config(photos, shard_size_mb=0.05), tmp_path, root)
    before, version = shard_bytes(root, "photos"), dvc_hash(root / "photos")
    dvc("init", "--no-scm", "-q")
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"))
    dvc("add", "-q", "data/prepared/photos")
    dvc("push", "-q")
    shutil.rmtree(root / "photos")
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    dvc("pull", "-q")
    assert shard_bytes(root, "photos") == before and dvc_hash(root / "photos") == version
    assert load_prepared("photos", root).manifest == manifest  # every shard re-hashed


def test_feature_statistics_and_vocabulary_streamed_equal_the_in_memory_ones(tmp_path):
    import keras

    from kerasops.models.recipe import _feature_statistics, _text_vocabulary
    from kerasops.models.training import TrainConfig

    rng = np.random.default_rng(0)
    values = rng.normal(5.0, 3.0, size=(2500, 3)) * [1, 10, 100]  # > 1 streamed batch of 1024
    lines = [f"{a},{b},{c},{'ab'[i % 2]}" for i, (a, b, c) in enumerate(values)]
    (tmp_path / "table.csv").write_text("f1,f2,f3,label\n" + "\n".join(lines) + "\n")
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    texts = [" ".join(rng.choice(words, 6)) + f",{'ab'[i % 2]}" for i in range(60)]
    (tmp_path / "texts.csv").write_text("text,label\n" + "\n".join(texts) + "\n")
    root = tmp_path / "prepared"
    prepare_dataset("table", {"source": "tabular_csv", "path": "table.csv"}, tmp_path, root)
    prepare_dataset("texts", {"source": "text_csv", "path": "texts.csv"}, tmp_path, root)
    train = TrainConfig(max_tokens=10)

    table = load_prepared("table", root)
    flat = table.splits["train"].x.astype(np.float64)
    streamed = _feature_statistics(table, train)
    np.testing.assert_allclose(streamed["mean"], flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(streamed["variance"], flat.var(axis=0), rtol=1e-10)

    texts_prepared = load_prepared("texts", root)
    in_memory = keras.layers.TextVectorization(max_tokens=10)
    in_memory.adapt(np.asarray(texts_prepared.splits["train"].x, dtype=object))
    vocabulary = _text_vocabulary(texts_prepared, train)["vocabulary"]
    assert vocabulary == in_memory.get_vocabulary()[2:] and len(vocabulary) == 5


def test_a_dataset_in_the_older_format_is_prepared_again_on_first_use(tmp_path):
    import json

    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.steps.prepare import ensure_prepared
    from tests.conftest import write_params

    params = load_params(write_params(tmp_path))
    folder = params.path("prepared_data") / "notes"
    folder.mkdir(parents=True)
    (folder / "train.npz").write_bytes(b"old")
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "files": {}}))
    csv = params.path("raw_data") / "notes.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"note {i} {label},{label}" for label in ("a", "b") for i in range(10)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")
    params = load_params(
        write_params(tmp_path, datasets={"notes": {"source": "text_csv", "path": "notes.csv"}})
    )
    prepared = ensure_prepared(params, "notes")
    assert prepared.manifest.schema_version == 2 and not (folder / "train.npz").exists()


def read_records(folder: Path, split: str) -> list[bytes]:
    """A split's records, shard after shard in name order."""
    import tensorflow as tf

    files = sorted(str(p) for p in folder.glob(f"{split}-*.tfrecord"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def test_the_external_shuffle_is_seeded_bounded_and_leaves_no_buckets(tmp_path, monkeypatch):
    from kerasops.data import external_shuffle

    # expected 0 bytes: one bucket, found too large and scattered again into ~1 KB buckets
    monkeypatch.setattr(external_shuffle, "BUCKET_BYTES", 1000)
    monkeypatch.setattr(external_shuffle, "MAX_BUCKET_BYTES", 2000)
    permuted = []
    shuffled = external_shuffle.Bucket.shuffled
    monkeypatch.setattr(
        external_shuffle.Bucket,
        "shuffled",
        lambda self, rng: permuted.append(self.memory_bytes) or shuffled(self, rng),
    )
    records = [f"record {i:04d} ".encode() * (1 + i % 5) for i in range(600)]
    written = {}
    for run in ("one", "two"):
        folder = tmp_path / run
        folder.mkdir()
        writer = external_shuffle.ShuffledShardWriter(folder, "train", 4096, 7, 0)
        for record in records:
            writer.write(record)
        shards = writer.close()
        assert sorted(p.name for p in folder.iterdir()) == [s.name for s in shards]  # no buckets
        written[run] = read_records(folder, "train")
    assert len(permuted) > 20 and max(permuted) <= 2000  # every bucket permuted within the bound
    assert written["one"] == written["two"] and sorted(written["one"]) == sorted(records)
    assert written["one"] != records
    other = external_shuffle.ShuffledShardWriter(tmp_path, "other", 4096, 8, 0)
    for record in records:
        other.write(record)
    other.close()
    assert read_records(tmp_path, "other") != written["one"]  # another seed, another order
