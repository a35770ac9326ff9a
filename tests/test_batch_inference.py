"""`kerasops predict-batch`: a served SavedModel scores a prepared dataset, an image folder and a
CSV in bounded batches; every written row equals the Keras model's own `predict` on the same
input, the prediction log parses with TF Serving's `prediction_log_pb2`, and a user's mistake is
one `error:` line and exit 2 that leaves an existing output as it was."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from kerasops.data import load_prepared
from kerasops.data.photos import generate_photo_folder
from kerasops.data.readers import read_image
from kerasops.pipelines.cli import main as kerasops
from kerasops.pipelines.config import load_params
from kerasops.serving.batch import CsvInput, ImageFolderInput
from kerasops.serving.servable import TensorSpecInfo
from tests import serving_helpers
from tests.conftest import write_params

IMAGE_SPEC = TensorSpecInfo("image", np.dtype("float32"), (None, 8, 8, 1))
FEATURES_SPEC = TensorSpecInfo("features", np.dtype("float32"), (None, 4))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with `digits` prepared and four served models: an 8x8 image classifier
    (`digits`), a tabular regressor (`tabular`, versions 1 and 2, version 1 labelled `stable`)
    exported without feature names, as versions were before they were kept, a text classifier
    (`news`), and a tabular regressor (`sensors`) exported by the export step from a run on the
    prepared tabular_csv dataset `sensors`, so its version names its feature columns; the
    Keras models themselves beside them."""
    from kerasops.serving.export import export_saved_model

    root = tmp_path_factory.mktemp("batch")
    params_path = write_params(root)
    assert kerasops(["--params", str(params_path), "prepare", "digits"]) == 0
    params = load_params(params_path)
    config = params.serving.at_root(root)
    models = {
        "digits": serving_helpers.digits_cnn(),
        "tabular": serving_helpers.regressor(seed=0),
        "tabular-2": serving_helpers.regressor(seed=1),
        "news": serving_helpers.text_classifier(),
        "sensors": serving_helpers.regressor(seed=2),
    }
    export_sensors(root, params, config, models["sensors"])
    classes = [f"digit{i}" for i in range(10)]
    export_saved_model(models["digits"], "digits", config=config, class_names=classes)
    info = {"registered_version": "1"}
    export_saved_model(models["tabular"], "tabular", config=config, labels=["stable"], info=info)
    info = {"registered_version": "2"}
    export_saved_model(models["tabular-2"], "tabular", config=config, info=info)
    export_saved_model(models["news"], "news", config=config, class_names=["a", "b", "c"])
    return {"root": root, "params": params_path, "models": models, "config": config}


SENSOR_FEATURES = ("speed", "load", "temperature", "hours")


def export_sensors(root: Path, params, config, model) -> None:
    """Prepare `sensors` (a tabular_csv of SENSOR_FEATURES and `wear`) and export `model` with
    the export step from a run config holding that manifest, as training writes config.json."""
    from kerasops.data import prepare_dataset
    from kerasops.pipelines.steps.export import export_model
    from kerasops.serving.sources import ModelSource

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4))
    raw = root / "data" / "raw" / "sensors.csv"
    with raw.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*SENSOR_FEATURES, "wear"])
        writer.writerows([*row, sum(row)] for row in x.tolist())
    source = {"source": "tabular_csv", "path": "sensors.csv", "label_column": "wear"}
    prepared = root / "data" / "prepared"
    manifest = prepare_dataset("sensors", {**source, "task": "regression"}, raw.parent, prepared)
    run_config = {"model": "mlp", "dataset": "sensors", "data": manifest.to_dict()}
    run = ModelSource(model, run_config, {"source": "a test run"})
    export_model(params, run, name="sensors", serving=config, prepared_root=prepared)


def write_table(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def score(project, *args: str) -> int:
    return kerasops(["--params", str(project["params"]), "predict-batch", *args])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities(rows: list[dict[str, str]], prefix: str = "probability_") -> np.ndarray:
    names = [k for k in rows[0] if k.startswith(prefix)]
    return np.array([[float(row[n]) for n in names] for row in rows], dtype=np.float32)


def log_records(folder: Path) -> list:
    """Every record of the TFRecord files under `folder`, parsed with TF Serving's own proto."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    files = sorted(str(p) for p in folder.rglob("*.tfrecord"))
    assert files, f"no prediction log under {folder}"
    return [
        prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        for raw in tf.data.TFRecordDataset(files)
    ]


def test_a_prepared_dataset_scores_as_the_keras_model_predicts_every_row(project, tmp_path):
    output = tmp_path / "digits.csv"
    assert score(project, "digits", "--input", "digits", "--output", str(output)) == 0
    rows = read_rows(output)
    prepared = load_prepared("digits", project["root"] / "data" / "prepared")
    expected_keys, expected_x = [], []
    for split in ("train", "val", "test"):
        (shard,) = prepared.manifest.shards[split]  # one shard: its order is the split's order
        x = prepared.splits[split].x
        expected_keys += [f"{shard}:{i}" for i in range(len(x))]
        expected_x.append(x)
    assert [row["key"] for row in rows] == expected_keys
    expected = project["models"]["digits"].predict(np.concatenate(expected_x), verbose=0)
    np.testing.assert_allclose(probabilities(rows), expected, rtol=1e-5, atol=1e-6)
    assert [int(row["class_id"]) for row in rows] == np.argmax(expected, axis=-1).tolist()
    assert [row["class"] for row in rows] == [f"digit{i}" for i in np.argmax(expected, -1)]


@pytest.mark.slow  # the monitor records an MLflow run (its SQLite store takes seconds)
def test_batch_scores_are_what_the_monitor_reads(project, tmp_path, capsys):
    import json

    logs = Path(project["config"].prediction_log_dir)
    shutil.rmtree(logs, ignore_errors=True)
    output = tmp_path / "digits.csv"
    assert score(project, "digits", "--input", "digits", "--output", str(output)) == 0
    rows = len(read_rows(output))
    code = kerasops(
        ["--params", str(project["params"]), "monitor", "digits", "--dataset", "digits"]
    )
    assert code in (0, 1), capsys.readouterr().err  # drift or not; not a mistake
    summary = json.loads((project["root"] / "artifacts/monitoring/digits.json").read_text())
    assert summary["rows"] == rows and summary["records"] == len(log_records(logs))
    assert summary["scores"]["input values"] < 0.01  # the training data itself: no drift


def test_an_image_folder_scores_every_file_and_logs_tf_serving_records(project, tmp_path):
    folder = generate_photo_folder(tmp_path / "photos", 21, size=24)  # cool/ grey/ warm/
    shutil.copy(folder / "cool" / "000000.jpg", folder / "loose.jpg")  # a flat file too
    logs = Path(project["config"].prediction_log_dir)
    shutil.rmtree(logs, ignore_errors=True)
    output = tmp_path / "photos.parquet"
    args = ["--input", str(folder), "--output", str(output), "--batch-size", "8"]
    assert score(project, "digits", *args, "--log-rows", "5") == 0

    import pyarrow.parquet as pq

    table = pq.read_table(output).to_pylist()
    files = sorted(p for p in folder.rglob("*.jpg"))
    assert [row["key"] for row in table] == [p.relative_to(folder).as_posix() for p in files]
    pixels = np.stack([read_image(p, (8, 8), "grayscale")[..., None] for p in files])
    expected = project["models"]["digits"].predict(pixels, verbose=0)
    written = np.array([[row[f"probability_digit{i}"] for i in range(10)] for row in table])
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-6)
    assert [row["class_id"] for row in table] == np.argmax(expected, axis=-1).tolist()

    records = log_records(logs)
    assert len(records) == 6  # batches of 8, 8, 6 rows in records of at most 5 rows
    import tensorflow as tf

    logged_in = np.concatenate(
        [tf.make_ndarray(r.predict_log.request.inputs["image"]) for r in records]
    )
    logged_out = np.concatenate(
        [tf.make_ndarray(r.predict_log.response.outputs["probabilities"]) for r in records]
    )
    np.testing.assert_array_equal(logged_in, pixels)
    np.testing.assert_allclose(logged_out, written, rtol=1e-6)
    spec = records[0].log_metadata.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("digits", 1, "serving_default")
    assert records[0].predict_log.request.model_spec.name == "digits"


def test_a_csv_scores_with_the_row_or_key_column_as_key(project, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "a", "b", "c", "d"])
        writer.writerows([f"id{i}", *map(repr, map(float, row))] for i, row in enumerate(x))
    output = tmp_path / "rows.csv.out"
    args = ["--input", str(path), "--output", str(output), "--format", "csv"]
    assert score(project, "tabular", *args, "--key-column", "id", "--version", "1") == 0
    rows = read_rows(output)
    assert [row["key"] for row in rows] == [f"id{i}" for i in range(300)]
    expected = project["models"]["tabular"].predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose([float(r["forecast"]) for r in rows], expected, rtol=1e-5)

    texts = tmp_path / "texts.csv"
    texts.write_text("text,source\ngood movie,x\nawful acting,y\nplot twist,z\n")
    output = tmp_path / "texts-out.csv"
    assert score(project, "news", "--input", str(texts), "--output", str(output)) == 0
    rows = read_rows(output)
    assert [row["key"] for row in rows] == ["1", "2", "3"]
    expected = project["models"]["news"].predict(
        np.array(["good movie", "awful acting", "plot twist"], dtype=object), verbose=0
    )
    np.testing.assert_allclose(probabilities(rows), expected, rtol=1e-5, atol=1e-6)


def test_a_csv_feeds_the_columns_the_version_names_in_its_order_and_ignores_others(
    project, tmp_path, capsys
):
    from kerasops.serving.repository import feature_names

    version = project["config"].model_repository
    assert feature_names(Path(version) / "sensors" / "1") == SENSOR_FEATURES
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)  # (B, F) in the model's order
    order = [2, 0, 3, 1]  # the file's: temperature, speed, hours, load
    header = ["id", *(SENSOR_FEATURES[i] for i in order), "wear", "recorded_at"]
    rows = [
        [f"id{n}", *(repr(float(row[i])) for i in order), "1.5", f"2026-01-{n % 28 + 1:02d}"]
        for n, row in enumerate(x)
    ]
    path = write_table(tmp_path / "shuffled.csv", header, rows)
    output = tmp_path / "scores.csv"
    args = ["--input", str(path), "--output", str(output), "--key-column", "id"]
    assert score(project, "sensors", *args, "--batch-size", "64") == 0
    printed = capsys.readouterr().out
    assert "CSV columns: 4 features by column name, in the model's order" in printed
    assert "(ignored: wear, recorded_at)" in printed
    written = read_rows(output)
    assert [row["key"] for row in written] == [f"id{n}" for n in range(300)]
    expected = project["models"]["sensors"].predict(x, verbose=0)[:, 0]  # (B,)
    np.testing.assert_array_equal([np.float32(r["forecast"]) for r in written], expected)


def test_the_report_says_which_rule_picked_the_csv_columns(project, tmp_path):
    from kerasops.pipelines.steps.predict_batch import BatchJob, predict_batch

    path = write_table(tmp_path / "one.csv", ["hours", "load", "speed", "temperature"], [[1] * 4])
    params = load_params(project["params"])
    job = BatchJob("sensors", str(path), str(tmp_path / "one-out.csv"), log_sampling=0.0)
    assert "CSV columns: 4 features by column name" in predict_batch(params, job).to_markdown()
    job = dataclasses.replace(job, model="tabular")  # a version exported without names
    markdown = predict_batch(params, job).to_markdown()
    assert "CSV columns: 4 features by column order" in markdown


def test_a_missing_feature_column_is_one_line_naming_it_and_nothing_is_written(
    project, tmp_path, capsys
):
    header = ["id", "hours", "speed", "wear", "load"]  # no temperature
    path = write_table(tmp_path / "partial.csv", header, [["a", 1, 2, 3, 4]])
    output = tmp_path / "scores.csv"
    assert score(project, "sensors", "--input", str(path), "--output", str(output)) == 2
    line = one_error_line(capsys)
    assert "has no column 'temperature'" in line
    assert "the CSV's columns: id, hours, speed, wear, load" in line
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial.csv"]  # no temporary file


def test_a_version_exported_without_feature_names_still_takes_columns_in_order(
    project, tmp_path, capsys
):
    x = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    path = write_table(tmp_path / "rows.csv", ["w", "x", "y", "z"], x.tolist())
    output = tmp_path / "scores.csv"
    args = ["--input", str(path), "--output", str(output), "--version", "1"]
    assert score(project, "tabular", *args) == 0
    assert "CSV columns: 4 features by column order" in capsys.readouterr().out
    expected = project["models"]["tabular"].predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose([float(r["forecast"]) for r in read_rows(output)], expected, 1e-6)

    path = write_table(tmp_path / "wide.csv", ["w", "x", "y", "z", "extra"], [[1, 2, 3, 4, 5]])
    assert score(project, "tabular", "--input", str(path), "--output", str(output)) == 2
    assert "takes 4 values per row; the CSV has 5 columns" in one_error_line(capsys)


def test_export_refuses_feature_names_that_do_not_fit_the_input(project):
    from kerasops.serving.export import ExportError, export_saved_model

    model = project["models"]["tabular"]
    config = project["config"]
    with pytest.raises(ExportError, match="3 feature names given for input 'features'"):
        export_saved_model(model, "misnamed", config=config, feature_names=["a", "b", "c"])
    with pytest.raises(ExportError, match="feature names repeated: a"):
        export_saved_model(model, "misnamed", config=config, feature_names=["a", "b", "a", "c"])
    assert not (Path(config.model_repository) / "misnamed").exists()


@pytest.mark.slow  # the MLflow registry's SQLite store takes seconds to create
def test_the_version_is_the_policys_unless_a_version_label_or_alias_names_one(project, tmp_path):
    from mlflow.tracking import MlflowClient

    from kerasops.pipelines.tracking import store

    path = tmp_path / "one.csv"
    path.write_text("a,b,c,d\n1,2,3,4\n")
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    first = project["models"]["tabular"].predict(x, verbose=0)[0, 0]
    second = project["models"]["tabular-2"].predict(x, verbose=0)[0, 0]
    assert abs(first - second) > 1e-3

    def forecast(*choice: str) -> float:
        output = tmp_path / "one-out.csv"
        args = ["--input", str(path), "--output", str(output), *choice]
        assert score(project, "tabular", *args) == 0
        return float(read_rows(output)[0]["forecast"])

    assert forecast() == pytest.approx(second, rel=1e-5)  # latest: what the server serves
    assert forecast("--label", "stable") == pytest.approx(first, rel=1e-5)
    assert forecast("--version", "1") == pytest.approx(first, rel=1e-5)

    store.configure(load_params(project["params"]))
    client = MlflowClient()
    client.create_registered_model("tabular")
    for _ in range(2):
        client.create_model_version("tabular", source=str(tmp_path))
    client.set_registered_model_alias("tabular", "champion", "1")
    assert forecast("--alias", "champion") == pytest.approx(first, rel=1e-5)
    client.set_registered_model_alias("tabular", "champion", "2")
    assert forecast("--alias", "champion") == pytest.approx(second, rel=1e-5)


def test_readers_yield_bounded_batches_lazily(project, tmp_path):
    folder = generate_photo_folder(tmp_path / "photos", 9, size=16)
    (folder / "warm" / "000008.jpg").write_bytes(b"not a jpeg")  # the last file of the last batch
    source = ImageFolderInput(folder, IMAGE_SPEC, skip_corrupt=False)
    chunks = source.chunks(4)
    assert inspect.isgenerator(chunks)
    first = next(chunks)  # read before the broken file is reached
    assert len(first.keys) == 4 and first.values.shape == (4, 8, 8, 1)
    assert next(chunks).values.shape == (4, 8, 8, 1)
    with pytest.raises(Exception, match="000008.jpg"):
        next(chunks)

    path = tmp_path / "big.csv"
    rows = 40_000
    values = np.arange(rows * 4, dtype=np.float64).reshape(rows, 4)
    np.savetxt(path, values, delimiter=",", header="a,b,c,d", comments="", fmt="%d")
    source = CsvInput(path, FEATURES_SPEC, key_column=None)
    assert source.total == rows
    tracemalloc.start()
    seen, largest = 0, 0
    for chunk in source.chunks(256):
        largest = max(largest, len(chunk.keys))
        seen += len(chunk.keys)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (seen, largest) == (rows, 256)
    whole = values.nbytes  # 1.3 MB as one float64 array, far more as Python rows
    assert peak < whole / 4, f"reading {rows} rows peaked at {peak} bytes"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def test_an_unreadable_image_fails_naming_it_and_leaves_the_output_or_is_skipped(
    project, tmp_path, capsys
):
    folder = generate_photo_folder(tmp_path / "photos", 6, size=16)
    (folder / "grey" / "000004.jpg").write_bytes(b"\xff\xd8 truncated")
    output = tmp_path / "out.csv"
    output.write_text("key,previous\nkept,1\n")
    args = ["--input", str(folder), "--output", str(output), "--batch-size", "2"]
    assert score(project, "digits", *args) == 2
    line = one_error_line(capsys)
    assert "grey/000004.jpg" in line and "--skip-corrupt" in line
    assert output.read_text() == "key,previous\nkept,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "photos"]  # no temp file

    assert score(project, "digits", *args, "--skip-corrupt") == 0
    captured = capsys.readouterr()
    assert "warning: skipped grey/000004.jpg" in captured.err
    assert "1 unreadable inputs skipped" in captured.out
    assert len(read_rows(output)) == 5


@pytest.mark.parametrize(
    ("model", "make_input", "extra", "message"),
    [
        ("digits", None, [], "input not found"),
        ("nosuch", "digits", [], "unknown model 'nosuch'"),
        ("tabular", "a,b,c\n1,2,3\n", [], "takes 4 values per row; the CSV has 3 columns"),
        ("tabular", "a,b,c,d,e\n1,2,3,4,5\n", [], "the CSV has 5 columns"),
        ("tabular", "a,b,c,d\n1,2,x,4\n", [], "row 1, column 'c': 'x' is not a number"),
        ("tabular", "a,b,c,d\n1,2,3,4\n", ["--key-column", "id"], "no key column 'id'"),
        ("news", "body\nhello\n", [], "no column 'text'"),
        ("tabular", "a,b,c,d\n1,2,3,4\n", ["--version", "7"], "has no version 7"),
        ("tabular", "a,b,c,d\n1,2,3,4\n", ["--label", "canary"], "no version labelled"),
        ("digits", "a,b\n1,2\n", [], "CSV rows fit a model over feature rows"),
    ],
)
def test_a_mistake_is_one_error_line_and_exit_2(
    project, tmp_path, capsys, model, make_input, extra, message
):
    if make_input is None:
        source = str(tmp_path / "missing.csv")
    elif make_input == "digits":
        source = "digits"
    else:
        (tmp_path / "in.csv").write_text(make_input)
        source = str(tmp_path / "in.csv")
    output = tmp_path / "out.csv"
    assert score(project, model, "--input", source, "--output", str(output), *extra) == 2
    assert message in one_error_line(capsys)
    assert not output.exists()


def test_an_unwritable_output_or_unknown_format_is_one_error_line(project, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("a,b,c,d\n1,2,3,4\n")
    (tmp_path / "file").write_text("")
    source = str(tmp_path / "in.csv")
    assert score(project, "tabular", "--input", source, "--output", f"{tmp_path}/file/x.csv") == 2
    assert "cannot write" in one_error_line(capsys)
    assert score(project, "tabular", "--input", source, "--output", str(tmp_path / "x.txt")) == 2
    assert "name it .csv or .parquet" in one_error_line(capsys)


def read_artifact(key: str) -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        response = client.request("GET", f"/artifacts/{key}/latest")
        response.raise_for_status()
        return response.json()


@pytest.mark.slow  # Prefect's test harness starts a server
def test_the_scoring_flow_runs_the_step_and_fails_a_mistake_with_one_line(
    project, tmp_path, prefect_harness
):
    from kerasops.pipelines.flows.batch import batch_scoring_flow

    output = tmp_path / "flow.csv"
    params_path = str(project["params"])
    state = batch_scoring_flow(
        "digits", "digits", str(output), split="test", params_path=params_path, return_state=True
    )
    assert state.is_completed()
    report = state.result()
    rows = read_rows(output)
    test_count = load_prepared("digits", project["root"] / "data" / "prepared").manifest.splits
    assert report.rows == len(rows) == test_count["test"]
    assert rows[0]["key"] == "test-00000.tfrecord:0"
    artifact = read_artifact("batch-digits")
    assert artifact["flow_run_id"] == str(state.state_details.flow_run_id)
    assert f"{report.rows} rows" in artifact["data"]

    failed = batch_scoring_flow(
        "nosuch", "digits", str(output), params_path=params_path, return_state=True
    )
    assert failed.is_failed() and failed.message.startswith("error: unknown model 'nosuch'")
    assert len(read_rows(output)) == report.rows  # the output of the run before stays


@pytest.mark.slow  # Prefect's test harness, and a kerasops process of its own
def test_cron_serves_the_scoring_flow_as_a_scheduled_deployment(project, prefect_harness):
    import asyncio
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "kerasops", "--params", str(project["params"])]
    command += ["predict-batch", "digits", "--input", "digits", "--output", "nightly.parquet"]
    command += ["--split", "test", "--cron", "0 4 * * *"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    async def registered():
        async with get_client() as client:
            for _ in range(300):
                try:
                    return await client.read_deployment_by_name("batch-scoring/score-digits")
                except Exception:  # noqa: BLE001 - not registered yet
                    assert process.poll() is None, process.stdout.read().decode()[-2000:]
                    await asyncio.sleep(0.5)
        raise AssertionError("the deployment was not registered within 150 s")

    try:
        stored = asyncio.run(registered())
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [s.schedule.cron for s in stored.schedules] == ["0 4 * * *"]
    parameters = stored.parameters
    assert (parameters["model"], parameters["split"], parameters["output"]) == (
        "digits",
        "test",
        "nightly.parquet",
    )
    assert parameters["params_path"] == str(project["params"])
