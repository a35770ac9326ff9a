"""The Python clients and the export / serve / predict commands against one embedded server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from serving import cli
from serving.client import ServingClientError, connect
from serving.config import ServingConfig
from serving.export import export_saved_model
from serving.server import EmbeddedServer, model_entries
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
    cli.add_commands(parser.add_subparsers(dest="command"))
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
    np.save(tmp_path / "images.npy", images)
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
        cli.main(["predict", "cnn-digits", "--input", str(tmp_path / "no.npy"), "--url", url]) == 1
    )
    assert capsys.readouterr().out.startswith("error: input file not found")
    assert cli.main(["--params", str(root / "none.yaml"), "export"]) == 1
    assert "exactly one of" in capsys.readouterr().out
