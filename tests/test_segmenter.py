"""The segmenter: its dataset and user source, the bad inputs a user sees in one line, the
builder, IoU metrics, training against the all-background baseline, and its export answering
REST and gRPC predicts on the embedded server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasops.data import DataError, load_prepared, prepare_dataset
from kerasops.data.detection import CanvasSpec, compose_canvases
from kerasops.data.segmentation import digit_masks
from kerasops.errors import ConfigError
from kerasops.models import build_model, preset_values
from kerasops.models.evaluation import confusion_counts
from kerasops.models.segmenter.metrics import confusion_scores
from tests.conftest import write_params
from tests.harness import run_builder_test

SEGMENTATION = {
    "kind": "image",
    "task": "segmentation",
    "shape": [48, 48, 1],
    "num_outputs": 11,
    "pixel_max": 240.0,
}
SMALL_SET = {"source": "digits_segmentation", "num_images": 60}
TRAIN_SET = {"source": "digits_segmentation", "num_images": 320}


# --- data -------------------------------------------------------------------------------------


def test_masks_mark_each_digits_ink_with_its_class_plus_one():
    glyphs = np.zeros((2, 8, 8), dtype=np.uint8)
    glyphs[:, 2:6, 2:6] = 200  # a square of ink in each glyph
    canvases, rows = compose_canvases(glyphs, ["3", "7"], CanvasSpec(20, 48, 12, 16, 3, seed=1))
    masks = digit_masks(canvases, rows)
    assert masks.shape == canvases.shape
    for index, label, top, left, bottom, right in rows:
        box = masks[index, top:bottom, left:right]
        assert set(np.unique(box)) <= {0, int(label) + 1} and (box == int(label) + 1).any()
    assert np.all(masks[canvases == 0] == 0)  # no ink, background


def test_prepared_segmentation_digits_has_pixel_masks(tmp_path):
    manifest = prepare_dataset("masks", SMALL_SET, tmp_path / "raw", tmp_path / "prepared")
    assert (manifest.kind, manifest.task) == ("image", "segmentation")
    assert manifest.input_shape == (48, 48, 1) and manifest.target_shape == (48, 48)
    assert manifest.classes == ("background", *(str(d) for d in range(10)))
    assert manifest.encodings == {"x": "image", "y": "int32"}  # streamed shards, like every set
    prepared = load_prepared("masks", tmp_path / "prepared")
    y = np.concatenate([s.y for s in prepared.splits.values()])  # (N, 48, 48)
    assert len(y) == 60 and y.min() == 0 and y.max() <= 10
    assert 0.02 < (y > 0).mean() < 0.4
    pixels = sum(sum(per.values()) for per in manifest.class_counts.values())
    assert pixels == y.size
    raw = tmp_path / "raw" / "masks"
    assert len(list((raw / "images").glob("*.png"))) == len(list((raw / "masks").glob("*.png")))

    from kerasops.data.validation import validate_prepared

    checks = {c.name: c for c in validate_prepared(prepared, prepared).checks}
    assert checks["label_set"].message.startswith("11 classes: background, 0, 1")
    assert checks["drift"].status == "pass"  # over the pixel labels and input values


def write_pairs(folder: Path, size: int = 16, count: int = 6) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 255, (size, size), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[: size // 2, : size // 2] = 1 + i % 2
        Image.fromarray(image).save(folder / "images" / f"p{i}.png")
        Image.fromarray(mask).save(folder / "masks" / f"p{i}.png")
    return folder


USER = {"source": "segmentation_folder", "classes": ["background", "cat", "dog"]}


def test_user_masks_are_resized_by_nearest_pixel(tmp_path):
    folder = write_pairs(tmp_path / "own")
    config = {**USER, "path": str(folder), "image_size": [32, 32], "val_fraction": 0.0}
    manifest = prepare_dataset("own", config, tmp_path, tmp_path / "prepared")
    assert manifest.classes == ("background", "cat", "dog") and manifest.target_shape == (32, 32)
    prepared = load_prepared("own", tmp_path / "prepared")
    y = np.concatenate([prepared.splits[s].y for s in ("train", "test")])
    assert set(np.unique(y)) == {0, 1, 2}  # no blended ids from resizing
    assert np.all(y[:, :16, :16] > 0) and np.all(y[:, 16:, :] == 0)


def _mask_too_big(folder: Path) -> str:
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(folder / "masks" / "p2.png")
    return "p2.png is 20x16 but its image is 16x16"


def _no_mask(folder: Path) -> str:
    (folder / "masks" / "p3.png").unlink()
    return "p3.png has no mask"


def _class_beyond(folder: Path) -> str:
    Image.fromarray(np.full((16, 16), 5, np.uint8)).save(folder / "masks" / "p1.png")
    return "p1.png holds class id 5 beyond the 3 declared classes"


@pytest.mark.parametrize("spoil", [_mask_too_big, _no_mask, _class_beyond])
def test_bad_masks_are_one_line_naming_the_file_and_change_nothing(tmp_path, capsys, spoil):
    from kerasops.pipelines.cli import main

    folder = write_pairs(tmp_path / "data" / "raw" / "own")
    datasets = {"own": {**USER, "path": "own", "image_size": [16, 16]}}
    write_params(tmp_path, datasets=datasets)
    args = ["--params", str(tmp_path / "params.yaml"), "prepare", "own"]
    assert main(args) == 0
    manifest = tmp_path / "data" / "prepared" / "own" / "manifest.json"
    before = manifest.read_text()
    capsys.readouterr()
    message = spoil(folder)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert manifest.read_text() == before  # the previous version stays


def test_too_few_classes_or_no_mask_folder_is_one_clear_error(tmp_path):
    folder = write_pairs(tmp_path / "own")
    config = {**USER, "path": str(folder), "image_size": [16, 16], "classes": ["only"]}
    with pytest.raises(ConfigError, match="classes must name at least two"):
        prepare_dataset("own", config, tmp_path, tmp_path / "prepared")
    with pytest.raises(DataError, match="is not a folder"):
        prepare_dataset(
            "own",
            {**USER, **config, "path": str(tmp_path), "classes": USER["classes"]},
            tmp_path,
            tmp_path / "p",
        )


# --- model and metrics --------------------------------------------------------------------------


def test_segmenter_through_the_builder_harness(tmp_path):
    images = np.random.default_rng(0).uniform(0, 240, (2, 48, 48, 1)).astype("float32")
    config = {**preset_values("segmenter", "segmenter_tiny"), "inputs": SEGMENTATION}
    expected = {"mask": (2, 48, 48), "probabilities": (2, 48, 48, 11)}
    model = run_builder_test("segmenter", config, images, expected, tmp_path)
    outputs = model.predict(images, verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=-1), 1.0, atol=1e-5)
    assert outputs["mask"].dtype == np.int32
    assert np.array_equal(outputs["mask"], outputs["probabilities"].argmax(axis=-1))


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({**SEGMENTATION, "shape": [50, 50, 1]}, "multiples of 8"),
        ({**SEGMENTATION, "task": "detection"}, "needs a segmentation dataset"),
    ],
)
def test_segmenter_rejects_inputs_it_cannot_take(inputs, message):
    config = {**preset_values("segmenter", "segmenter_small"), "inputs": inputs}
    with pytest.raises(ConfigError, match=message):
        build_model("segmenter", config)


def test_iou_and_pixel_accuracy_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    predicted = np.array([[0, 1, 1, 1], [0, 0, 0, 2]])
    scores = confusion_scores(confusion_counts(truth, predicted, 4))
    # background: TP 3, FN 1, FP 1 -> 3/5; class 1: 2/3; class 2: 1/2; class 3 absent
    np.testing.assert_allclose(scores["iou"][:3], [3 / 5, 2 / 3, 1 / 2])
    assert np.isnan(scores["iou"][3])
    assert scores["mean_iou"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert scores["overall_pixel_accuracy"] == pytest.approx(6 / 8)
    np.testing.assert_allclose(scores["pixel_accuracy"][:3], [3 / 4, 1.0, 1 / 2])


# --- training, tracking, export and serving --------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from kerasops.pipelines.config import load_params
    from tests.conftest import train_run

    root = tmp_path_factory.mktemp("segmenter_project")
    train = {"epochs": 12, "batch_size": 16, "learning_rate": 0.01, "patience": 12}
    models = {"segmenter": {"preset": "segmenter_tiny", "train": train}}
    write_params(root, datasets={"segmentation_digits": TRAIN_SET}, models=models)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        params = load_params(root / "params.yaml")
        yield root, params, train_run(params, "segmenter", "segmentation_digits")


@pytest.mark.slow
def test_trained_segmenter_beats_the_all_background_baseline_and_is_tracked(trained):
    from mlflow.tracking import MlflowClient

    from kerasops.pipelines.tracking import store as tracking
    from kerasops.pipelines.tracking.runs import headline

    root, params, result = trained
    metrics = result.metrics
    assert metrics["test_mean_iou"] > metrics["baseline_background_mean_iou"] + 0.05
    assert metrics["test_pixel_accuracy"] >= metrics["baseline_background_pixel_accuracy"]
    assert metrics["baseline_background_iou_0"] == 0.0 and "test_iou_background" in metrics
    on_disk = json.loads((result.run_dir / "metrics.json").read_text())
    assert on_disk["test_mean_iou"] == pytest.approx(metrics["test_mean_iou"])
    assert (result.run_dir / "segmentation.png").is_file()
    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["baseline_background_mean_iou"] == pytest.approx(
        metrics["baseline_background_mean_iou"]
    )
    row = headline(run.data.metrics)
    assert row["metric"] == "mean_iou" and "(all background)" in row["baseline"]


@pytest.mark.slow
def test_exported_segmenter_answers_rest_and_grpc_predicts(trained):
    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

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
    test = load_prepared("segmentation_digits", params.path("prepared_data")).splits["test"]
    images = np.asarray(test.x[:3])
    exported = export_saved_model(source.model, "segmenter", config=config, warmup_examples=images)
    assert exported.signatures == ("serving_default",) and exported.warmup_records == 3
    expected = source.model.predict(images, verbose=0)

    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/segmenter:predict"
        reply = httpx.post(url, json={"instances": images.tolist()}, timeout=30)
        bad = httpx.post(url, json={"instances": [[[1.0]]]}, timeout=30)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "segmenter"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
            answer = stub.Predict(request, timeout=30)
    finally:
        server.stop()
    assert reply.status_code == 200, reply.text
    rows = reply.json()["predictions"]
    assert len(rows) == 3 and set(rows[0]) == {"mask", "probabilities"}
    assert np.array_equal(np.array([r["mask"] for r in rows]), expected["mask"])
    assert 400 <= bad.status_code < 500
    mask = tf.make_ndarray(answer.outputs["mask"])
    assert mask.dtype == np.int32 and np.array_equal(mask, expected["mask"])
    probabilities = tf.make_ndarray(answer.outputs["probabilities"])
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-5)


def test_data_add_suggests_the_folder_entry_with_classes_from_the_masks(tmp_path):
    from kerasops.data.describe import suggest_entry

    folder = write_pairs(tmp_path / "own", size=16)
    entry = suggest_entry("segmentation_folder", folder, "own", {})
    assert entry == {
        "source": "segmentation_folder",
        "path": "own",
        "classes": ["background", "class_1", "class_2"],
        "image_size": [16, 16],
        "color_mode": "grayscale",
    }


@pytest.mark.slow
def test_classifier_on_segmentation_data_is_a_one_line_error(trained, capsys):
    from kerasops.pipelines.cli import main

    root, _, _ = trained
    argv = ["--params", str(root / "params.yaml"), "train", "cnn", "--dataset"]
    code = main([*argv, "segmentation_digits"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "is a segmentation dataset" in err and "train the segmenter" in err
