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
from tests.serving_helpers import digit_images, digits_cnn, regressor

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
    assert cli.main(argv + (["--grpc"] if use_grpc else [])) == 0
    printed = json.loads(capsys.readouterr().out)
    want = np.asarray(model(images, training=False))
    np.testing.assert_allclose(printed["probabilities"], want, atol=1e-5)


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
    np.testing.assert_allclose(response.json()["predictions"], want, atol=1e-5)


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
