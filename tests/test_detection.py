"""The detector: its dataset, builder, targets, mAP@0.5, training against the random-boxes
baseline, and its export answering a REST predict on the embedded server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kerasops.data import DataError, Split, load_prepared, prepare_dataset
from kerasops.data.detection import CanvasSpec, compose_canvases
from kerasops.errors import ConfigError
from kerasops.models import build_model, preset_values
from kerasops.models.detector.builder import encode_targets
from kerasops.models.detector.metrics import (
    Detections,
    average_precision,
    box_iou,
    mean_average_precision,
    random_detections,
)
from tests.conftest import write_params
from tests.harness import run_builder_test

DETECTION = {
    "kind": "image",
    "task": "detection",
    "shape": [48, 48, 1],
    "num_outputs": 10,
    "pixel_max": 240.0,
}
SMALL_SET = {"source": "digits_detection", "num_images": 400}
TRAIN_SET = {"source": "digits_detection", "num_images": 1000}


# --- data -------------------------------------------------------------------------------------


def test_canvases_are_seeded_and_boxes_apart_inside_the_canvas():
    glyphs = np.full((3, 8, 8), 200, dtype=np.uint8)
    spec = CanvasSpec(40, 48, 12, 20, 3, seed=5)
    canvases, rows = compose_canvases(glyphs, ["a", "b", "c"], spec)
    again, same_rows = compose_canvases(glyphs, ["a", "b", "c"], spec)
    assert np.array_equal(canvases, again) and rows == same_rows
    assert canvases.shape == (40, 48, 48)
    for index in range(40):
        boxes = [r[2:] for r in rows if r[0] == index]
        assert 1 <= len(boxes) <= 3
        for i, (top, left, bottom, right) in enumerate(boxes):
            assert min(top, left) >= 0 and max(bottom, right) <= 48
            assert 12 <= bottom - top == right - left <= 20
            assert canvases[index, top:bottom, left:right].min() > 0  # the pasted glyph
            for other in boxes[i + 1 :]:
                overlap_y = min(bottom, other[2]) - max(top, other[0])
                overlap_x = min(right, other[3]) - max(left, other[1])
                assert overlap_y <= 0 or overlap_x <= 0


def test_prepared_detection_digits_has_padded_box_targets(tmp_path):
    manifest = prepare_dataset("boxes", SMALL_SET, tmp_path / "raw", tmp_path / "prepared")
    assert (manifest.kind, manifest.task) == ("image", "detection")
    assert manifest.input_shape == (48, 48, 1) and manifest.target_shape == (3, 5)
    assert manifest.classes == tuple(str(d) for d in range(10))
    prepared = load_prepared("boxes", tmp_path / "prepared")
    y = np.concatenate([s.y for s in prepared.splits.values()])  # (N, 3, 5)
    assert len(y) == 400
    real = y[..., 4] >= 0
    assert real[:, 0].all()  # at least one digit per canvas
    assert np.all(y[~real] == [0, 0, 0, 0, -1])
    boxes = y[real]
    assert np.all((boxes[:, :4] >= 0) & (boxes[:, :4] <= 1))
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    counted = sum(sum(per.values()) for per in manifest.class_counts.values())
    assert counted == int(real.sum())
    csv_rows = (tmp_path / "raw" / "boxes" / "annotations.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + int(real.sum())


def test_detection_data_is_validated_by_its_box_labels(tmp_path):
    from kerasops.data.validation import feature_samples, validate_prepared

    prepare_dataset("boxes", SMALL_SET, tmp_path / "raw", tmp_path / "prepared")
    prepared = load_prepared("boxes", tmp_path / "prepared")
    report = validate_prepared(prepared, prepared)
    checks = {c.name: c for c in report.checks}
    assert report.passed and {"label_set", "class_balance", "drift"} <= set(checks)
    assert checks["label_set"].message.startswith("10 classes")
    samples = feature_samples(prepared)
    assert samples["labels"].min() >= 0 and len(samples["box heights"]) == len(samples["labels"])
    wrong = prepared.splits["train"].y.copy()
    wrong[0, 0, 4] = 12  # a box labelled with a class the dataset does not have
    splits = {**prepared.splits, "train": Split(prepared.splits["train"].x, wrong)}
    broken = validate_prepared(dataclasses.replace(prepared, splits=splits), None)
    assert not broken.passed and "labels outside 0..9" in broken.summary()


def write_annotations(folder: Path, rows: list[str], size: int = 16) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((size, size), np.uint8)).save(folder / "images" / name)
    path = folder / "boxes.csv"
    path.write_text("\n".join(["image,label,ymin,xmin,ymax,xmax", *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    "rows, message",
    [
        (["images/a.png,cat,8,2,4,6"], "needs 0 <= ymin < ymax"),
        (["images/a.png,cat,0,0,4,20"], "ends outside its 16x16 image"),
        (["images/nope.png,cat,0,0,4,4"], "image images/nope.png does not exist"),
        (["images/a.png,cat,0,0,4,4", "images/a.png,dog,8,8,12,12"], "over max_objects=1"),
        (["images/a.png,,0,0,4,4"], "empty label"),
    ],
)
def test_bad_annotations_are_one_clear_error(tmp_path, rows, message):
    path = write_annotations(tmp_path, rows)
    config = {"source": "detection_csv", "path": str(path), "image_size": [16, 16]}
    with pytest.raises(DataError, match=message):
        prepare_dataset("bad", {**config, "max_objects": 1}, tmp_path, tmp_path / "prepared")


def test_user_annotations_are_resized_with_fractional_boxes(tmp_path):
    rows = [
        f"images/{n}.png,{c},{i},0,{i + 8},8" for i in range(2) for n, c in (("a", "x"), ("b", "y"))
    ]
    path = write_annotations(tmp_path, rows, size=16)
    config = {"source": "detection_csv", "path": str(path), "image_size": [32, 32]}
    config.update(val_fraction=0.0, test_fraction=0.5)
    prepare_dataset("user", config, tmp_path, tmp_path / "prepared")
    prepared = load_prepared("user", tmp_path / "prepared")
    assert prepared.splits["train"].x.shape[1:] == (32, 32, 1)
    y = np.concatenate([prepared.splits[s].y for s in ("train", "test")])
    assert y.shape == (2, 3, 5)
    np.testing.assert_allclose(sorted(y[:, 1, :4].tolist()), [[1 / 16, 0, 9 / 16, 0.5]] * 2)


# --- model --------------------------------------------------------------------------------------


def test_detector_through_the_builder_harness(tmp_path):
    images = np.random.default_rng(0).uniform(0, 240, (2, 48, 48, 1)).astype("float32")
    config = {**preset_values("detector", "detector_tiny"), "inputs": DETECTION}
    expected = {"boxes": (2, 10, 4), "classes": (2, 10), "scores": (2, 10), "num_detections": (2,)}
    model = run_builder_test("detector", config, images, expected, tmp_path)
    out = model.predict(images, verbose=0)
    for i, count in enumerate(out["num_detections"]):
        assert np.all(out["classes"][i, count:] == -1) and np.all(out["classes"][i, :count] >= 0)
        assert np.all(np.diff(out["scores"][i, :count]) <= 0)  # best first
    assert np.all((out["boxes"] >= 0) & (out["boxes"] <= 1))


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({**DETECTION, "task": "classification"}, "needs a detection dataset"),
        ({**DETECTION, "shape": [36, 36, 1]}, "multiples of the grid cell 8"),
        ({**DETECTION, "kind": "tabular", "shape": [4]}, "takes image data"),
    ],
)
def test_detector_rejects_inputs_it_cannot_take(inputs, message):
    with pytest.raises(ConfigError, match=message):
        build_model("detector", {"inputs": inputs})


def test_targets_land_in_the_cell_holding_the_box_center():
    y = np.array([[[0.0, 0.5, 0.25, 0.75, 3], [0.5, 0.0, 1.0, 0.5, 7], [0, 0, 0, 0, -1]]])
    targets = encode_targets(y.astype("float32"), (6, 6))  # (1, 6, 6, 6)
    assert targets[..., 0].sum() == 2
    # center (0.125, 0.625) -> cell (0, 3), offsets (0.75, 0.75) of a cell
    np.testing.assert_allclose(targets[0, 0, 3], [1, 0.75, 0.75, 0.25, 0.25, 3])
    np.testing.assert_allclose(targets[0, 4, 1], [1, 0.5, 0.5, 0.5, 0.5, 7])


# --- metric -------------------------------------------------------------------------------------


def test_iou_and_average_precision_by_hand():
    a = np.array([[0, 0, 0.5, 0.5]])
    b = np.array([[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 1, 1]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 7, 0.0]])
    # ranked TP, FP, TP over 2 truths: precision 1 up to recall 0.5, then 2/3 up to 1
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.array([]), np.array([], dtype=bool), 3) == 0.0


def test_map_counts_duplicates_as_false_positives_and_skips_absent_classes():
    truths = np.array([[[0, 0, 0.5, 0.5, 0], [0.5, 0.5, 1, 1, 1]]], dtype="float32")
    perfect = Detections(truths[0, :, :4], np.array([0, 1]), np.array([0.9, 0.8]))
    score, per_class = mean_average_precision([perfect], truths, 3)
    assert score == 1.0 and per_class[:2] == [1.0, 1.0] and np.isnan(per_class[2])
    # a duplicate of box 0 scored above the real match, and a wrong-class box
    boxes = np.array([[0, 0, 0.5, 0.5], [0.02, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])
    noisy = Detections(boxes, np.array([0, 0, 2]), np.array([0.9, 0.95, 0.99]))
    score, per_class = mean_average_precision([noisy], truths, 3)
    assert per_class[0] == 1.0 and per_class[1] == 0.0 and score == 0.5
    shifted = Detections(truths[0, :, :4] + 0.3, np.array([0, 1]), np.array([0.9, 0.8]))
    assert mean_average_precision([shifted], truths, 3)[0] == 0.0  # IoU below 0.5


def test_random_boxes_score_near_zero():
    rng = np.random.default_rng(1)
    top = rng.uniform(0, 0.6, (200, 2, 2))
    truths = np.concatenate([top, top + 0.35, rng.integers(0, 10, (200, 2, 1))], axis=-1)
    guesses = random_detections(200, 10, truths, 10, seed=3)
    assert all(len(g.scores) == 10 for g in guesses)
    assert mean_average_precision(guesses, truths.astype("float32"), 10)[0] < 0.1


# --- training, tracking, export and serving --------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from kerasops.pipelines.config import load_params
    from tests.conftest import train_run

    root = tmp_path_factory.mktemp("detector_project")
    models = {"detector": {"preset": "detector_small", "train": {"epochs": 5, "batch_size": 16}}}
    write_params(root, datasets={"detection_digits": TRAIN_SET}, models=models)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        params = load_params(root / "params.yaml")
        yield root, params, train_run(params, "detector", "detection_digits")


@pytest.mark.slow
def test_trained_detector_beats_random_boxes_and_is_tracked(trained):
    from mlflow.tracking import MlflowClient

    from kerasops.pipelines.tracking import store as tracking

    root, params, result = trained
    metrics = result.metrics
    assert metrics["baseline_random_map50"] < 0.02
    assert metrics["test_map50"] > 0.2
    assert metrics["test_map50"] > 10 * metrics["baseline_random_map50"]
    on_disk = json.loads((result.run_dir / "metrics.json").read_text())
    assert on_disk["test_map50"] == pytest.approx(metrics["test_map50"])
    assert (result.run_dir / "learning_curves.png").is_file()
    assert (result.run_dir / "detections.png").is_file()
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["model_config"]["inputs"]["task"] == "detection"

    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.filters"] == "[16, 32, 64]"
    assert run.data.metrics["test_map50"] == pytest.approx(metrics["test_map50"])
    history = [m.value for m in MlflowClient().get_metric_history(result.run_id, "val_loss")]
    assert len(history) >= 2 and min(history) < history[0]
    logged = {a.path for a in MlflowClient().list_artifacts(result.run_id, "model")}
    assert "model/MLmodel" in logged


@pytest.mark.slow
def test_exported_detector_answers_rest_predict(trained):
    httpx = pytest.importorskip("httpx")
    from kerasops.serving.config import ServingConfig
    from kerasops.serving.export import export_saved_model
    from kerasops.serving.server import EmbeddedServer, model_entries
    from kerasops.serving.sources import load_from_folder

    root, params, result = trained
    source = load_from_folder(result.run_dir)  # what `kerasops export` reads
    config = ServingConfig(
        model_repository=str(root / "repo"),
        models_config=str(root / "models.config"),
        rest_port=0,
        grpc_port=0,
    )
    test = load_prepared("detection_digits", params.path("prepared_data")).splits["test"]
    images = np.asarray(test.x[:4])
    exported = export_saved_model(source.model, "detector", config=config, warmup_examples=images)
    assert exported.signatures == ("serving_default",) and exported.warmup_records == 4
    expected = source.model.predict(images, verbose=0)

    entries, path = model_entries(config)
    server = EmbeddedServer(config, entries, path)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/detector:predict"
        reply = httpx.post(url, json={"instances": images.tolist()}, timeout=30)
        bad = httpx.post(url, json={"instances": [[[1.0]]]}, timeout=30)
    finally:
        server.stop()
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == 4
    for i, row in enumerate(predictions):
        assert set(row) == {"boxes", "classes", "scores", "num_detections"}
        np.testing.assert_allclose(row["boxes"], expected["boxes"][i], atol=1e-5)
        assert row["classes"] == expected["classes"][i].tolist()
        assert row["num_detections"] == int(expected["num_detections"][i]) >= 1
    assert 400 <= bad.status_code < 500


@pytest.mark.slow
def test_classifier_on_detection_data_is_a_one_line_error(trained, capsys):
    from kerasops.pipelines.cli import main

    root, _, _ = trained
    code = main(
        ["--params", str(root / "params.yaml"), "train", "cnn", "--dataset", "detection_digits"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "is a detection dataset" in err and "train the detector" in err
