"""The Python clients and the export / serve / predict commands against one embedded server."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kerasops.pipelines import cli
from kerasops.pipelines.cli import serving as serving_cli
from kerasops.serving.client import ServingClientError, connect
from kerasops.serving.config import ServingConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.server import EmbeddedServer, model_entries
from tests.serving_helpers import digit_images, digits_cnn, probabilities_of, regressor

pytest.importorskip("tensorflow_serving.apis")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("client")
    config = ServingConfig(
        model_repository=str(root / "models"),
        models_config=str(root / "models.config"),
        rest_port=0,
        grpc_port=0,
    )
    model = digits_cnn(seed=4)
    model.save(root / "model.keras")
    (root / "config.json").write_text(json.dumps({"model": "cnn", "dataset": "digits"}))
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default=str(root / "none.yaml"))
    serving_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "export",
            str(root),
            "--label",
            "stable",
            "--model-repository",
            config.model_repository,
            "--models-config",
            config.models_config,
        ]
    )
    assert args.func(args) == 0
    export_saved_model(regressor(), "reg", config=config)
    entries, path = model_entries(config)
    server = EmbeddedServer(config, entries, path)
    server.start()
    yield server, model, root
    server.stop()


@pytest.mark.parametrize("use_grpc", [False, True])
def test_client_predict_matches_in_process(served, use_grpc: bool) -> None:  # noqa: ANN001
    server, model, _ = served
    address = (
        f"127.0.0.1:{server.grpc_port}" if use_grpc else f"http://127.0.0.1:{server.rest_port}"
    )
    images = digit_images(3, seed=9)
    with connect(address, grpc=use_grpc) as client:
        outputs = client.predict("cnn-digits", images, label="stable")
        classes = client.classify("cnn-digits", [{"image": images[0]}])
        values = client.regress("reg", [{"features": np.ones(4, "float32")}])
        with pytest.raises(ServingClientError):
            client.predict("missing", images)
    want = np.asarray(model(images, training=False))
    np.testing.assert_allclose(outputs["probabilities"], want, atol=1e-5)
    np.testing.assert_allclose([score for _, score in classes[0]], want[0], atol=1e-5)
    assert len(values) == 1


@pytest.mark.parametrize("use_grpc", [False, True])
def test_predict_command_prints_outputs(served, tmp_path: Path, capsys, use_grpc: bool) -> None:  # noqa: ANN001
    server, model, _ = served
    images = digit_images(2, seed=5)
    np.save(tmp_path / "images.npy", images.astype("float64"))  # cast to the signature's dtype
    url = f"127.0.0.1:{server.grpc_port}" if use_grpc else f"http://127.0.0.1:{server.rest_port}"
    argv = ["predict", "cnn-digits", "--input", str(tmp_path / "images.npy"), "--url", url]
    assert cli.main(argv + ["--raw"] + (["--grpc"] if use_grpc else [])) == 0
    printed = json.loads(capsys.readouterr().out)
    want = np.asarray(model(images, training=False))
    np.testing.assert_allclose(printed["probabilities"], want, atol=1e-5)
    assert printed["classes"] == [[str(k) for k in range(10)]] * 2  # serving_default names them


@pytest.mark.parametrize("use_grpc", [False, True])
def test_predict_takes_image_files_and_names_the_classes(
    served, tmp_path: Path, capsys, use_grpc: bool
) -> None:  # noqa: ANN001, E501
    from PIL import Image

    server, model, _ = served
    rng = np.random.default_rng(3)
    # an RGB photo of another size and a grayscale one: both become the model's 8x8x1 pixels
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8), "RGB").save(
        tmp_path / "a.png"
    )
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(tmp_path / "b.jpg")
    url = f"127.0.0.1:{server.grpc_port}" if use_grpc else f"http://127.0.0.1:{server.rest_port}"
    argv = ["predict", "cnn-digits", "--input", str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    argv += ["--url", url, "--top", "3"] + (["--grpc"] if use_grpc else [])
    assert cli.main(argv) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    from kerasops.data.readers import read_image

    pixels = np.stack([read_image(tmp_path / n, (8, 8), "grayscale") for n in ("a.png", "b.jpg")])
    want = np.asarray(model(pixels[..., None], training=False))
    assert [a["input"] for a in answers] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    for answer, row in zip(answers, want, strict=True):
        assert answer["class"] == str(int(np.argmax(row)))
        assert len(answer["probabilities"]) == 3
        top = sorted(answer["probabilities"].items(), key=lambda kv: -kv[1])
        assert top[0][0] == answer["class"]
        assert abs(top[0][1] - float(row.max())) < 1e-5


def test_predict_reads_csv_rows_for_a_feature_model(served, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    server, _, _ = served
    (tmp_path / "rows.csv").write_text("id,a,b,c,d\nx,1,2,3,4\ny,0,0,0,1\n")
    url = f"http://127.0.0.1:{server.rest_port}"
    assert cli.main(["predict", "reg", "--input", str(tmp_path / "rows.csv"), "--url", url]) == 0
    (outputs,) = json.loads(capsys.readouterr().out).values()
    assert np.asarray(outputs).shape[0] == 2
    (tmp_path / "short.csv").write_text("a,b\n1,2\n")
    assert cli.main(["predict", "reg", "--input", str(tmp_path / "short.csv"), "--url", url]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "takes 4 values per row" in error, error


def test_cli_mistakes_are_one_line_errors(served, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    server, _, root = served
    url = f"http://127.0.0.1:{server.rest_port}"
    assert (
        cli.main(["predict", "cnn-digits", "--input", str(tmp_path / "no.npy"), "--url", url]) == 2
    )
    assert capsys.readouterr().err.startswith("error: input file not found")
    assert cli.main(["--params", str(root / "none.yaml"), "export"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_graceful_shutdown_finishes_in_flight_requests(served) -> None:  # noqa: ANN001
    import httpx

    from kerasops.serving.config import BatchingConfig

    _, model, root = served
    config = ServingConfig(
        model_repository=str(root.parent / root.name / "models"),
        models_config=str(root / "models.config"),
        rest_port=0,
        grpc_port=0,
        batching=BatchingConfig(max_batch_size=64, batch_timeout_micros=500_000),
    )
    entries, path = model_entries(config)
    server = EmbeddedServer(config, entries, path)
    server.start()
    images = digit_images(1, seed=7)
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/cnn-digits:predict"
    batcher = server.manager.resolve("cnn-digits").signature(None).batcher
    running, run = threading.Event(), batcher._run

    def slow_run(inputs):  # noqa: ANN001, ANN202 - the request is in flight while stop() begins
        running.set()
        time.sleep(0.5)
        return run(inputs)

    batcher._run = slow_run
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url, json={"instances": images.tolist()}, timeout=30)
        assert running.wait(20) and not pending.done()
        server.stop()
        response = pending.result()
    assert response.status_code == 200
    want = np.asarray(model(images, training=False))
    np.testing.assert_allclose(probabilities_of(response.json()["predictions"]), want, atol=1e-5)


@pytest.mark.slow  # MLflow's SQLite store setup and log_model take most of a minute here
def test_export_from_an_mlflow_run(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    mlflow = pytest.importorskip("mlflow")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("serving-test")
    model = regressor(seed=3)
    with mlflow.start_run() as run:
        mlflow.keras.log_model(model, name="model")
        mlflow.log_dict({"model": "mlp", "dataset": "sunspots"}, "config.json")
    repository = tmp_path / "models"
    argv = [
        "--params",
        str(tmp_path / "none.yaml"),
        "export",
        "--run-id",
        run.info.run_id,
        "--tracking-uri",
        tracking,
        "--model-repository",
        str(repository),
        "--models-config",
        str(tmp_path / "models.config"),
    ]
    assert cli.main(argv) == 0, capsys.readouterr().err
    version_dir = repository / "mlp-sunspots" / "1"
    info = json.loads((version_dir / "assets.extra" / "kerasops_export.json").read_text())
    assert info["mlflow_run_id"] == run.info.run_id
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    x = np.ones((2, 4), "float32")
    got = loaded.signatures["serving_default"](features=tf.constant(x))["forecast"]
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)
    assert "regress" in loaded.signatures
