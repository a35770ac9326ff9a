"""ViT, autoencoder and GAN trained on digits with `kerasops train`: each beats its trivial
baseline, is tracked in MLflow, and answers REST predicts once exported to the embedded server."""

from __future__ import annotations

import json

import httpx
import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.data import load_prepared
from kerasops.pipelines.cli import main as kerasops
from kerasops.pipelines.config import load_params
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.runs import compare_runs, format_table
from tests.conftest import write_params
from tests.serving_helpers import probabilities_of

pytestmark = pytest.mark.slow  # trains the ViT, autoencoder and GAN


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    """One project folder for the module: digits prepared once, runs side by side in MLflow."""
    root = tmp_path_factory.mktemp("vision")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        write_params(root)
        yield load_params(root / "params.yaml")


def train(params, *argv: str) -> dict:
    """`kerasops train ...` on digits; the run's metrics.json."""
    model = argv[0]
    assert kerasops(["train", *argv, "--dataset", "digits"]) == 0
    run_dir = params.path("artifacts") / "runs" / f"{model}-digits"
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def vit_metrics(params):
    return train(params, "vit", "--preset", "vit_tiny", "--set", "epochs=8")


@pytest.fixture(scope="module")
def autoencoder_metrics(params):
    return train(params, "autoencoder", "--preset", "autoencoder_dense_small", "--set", "epochs=15")


@pytest.fixture(scope="module")
def gan_metrics(params):
    return train(
        params, "gan", "--preset", "gan_small", "--set", "epochs=10", "--set", "batch_size=16",
        "--set", "learning_rate=0.001",
    )  # fmt: skip


def latest_run(params, model: str):
    tracking.configure(params)
    return compare_runs(params, model=model)[0]


def test_vit_beats_majority_and_shows_beside_the_cnn_in_compare(params, vit_metrics, capsys):
    assert vit_metrics["test_accuracy"] > vit_metrics["baseline_majority_accuracy"] + 0.4
    assert kerasops(["train", "cnn", "--dataset", "digits", "--set", "epochs=2"]) == 0
    rows = compare_runs(params, dataset="digits")
    assert {"vit", "cnn"} <= {row["model"] for row in rows}
    table = format_table(rows)
    assert "vit" in table and "cnn" in table


def test_autoencoder_reconstructs_and_detects_the_held_out_digit(params, autoencoder_metrics):
    m = autoencoder_metrics
    assert m["test_reconstruction_mse"] < 0.7 * m["baseline_mean_image_mse"]
    assert m["anomaly_roc_auc"] > 0.6  # the withheld digit 9 scores higher than normal digits
    assert m["anomaly_roc_auc"] > m["baseline_mean_image_roc_auc"]

    run_dir = params.path("artifacts") / "runs" / "autoencoder-digits"
    scorer = keras.saving.load_model(run_dir / "model.keras")
    assert scorer.get_layer("is_anomaly").threshold == pytest.approx(m["anomaly_threshold"])
    val = load_prepared("digits", params.path("prepared_data")).splits["val"]
    normal = np.asarray(val.x)[np.asarray(val.y) != 9]
    flagged = scorer.predict(normal, verbose=0)["is_anomaly"].mean()
    assert 0.0 < flagged <= 0.1  # threshold = 95th percentile of these very errors


def test_gan_beats_noise_and_logs_a_sample_grid_every_epoch(params, gan_metrics):
    m = gan_metrics
    assert m["test_digits_score"] > m["baseline_noise_digits_score"]
    assert m["test_digits_score"] > m["baseline_pixel_gaussian_digits_score"]
    assert m["test_frechet_distance"] < m["baseline_noise_frechet_distance"]
    run = latest_run(params, "gan")
    client = MlflowClient()
    run_id = client.search_runs([tracking.configure(params)], "tags.model = 'gan'", max_results=1)[
        0
    ].info.run_id
    assert run["status"] == "FINISHED"
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert len([p for p in images if "samples" in p and p.endswith(".png")]) == 10
    assert len(client.get_metric_history(run_id, "g_loss")) == 10


def test_exported_models_answer_rest_predicts(
    params, vit_metrics, autoencoder_metrics, gan_metrics, tmp_path
):
    from kerasops.serving.config import ServingConfig
    from kerasops.serving.server import EmbeddedServer, model_entries

    repository, models_config = tmp_path / "models", tmp_path / "models.config"
    runs = params.path("artifacts") / "runs"
    for model in ("vit", "autoencoder", "gan"):
        assert kerasops([
            "export", str(runs / f"{model}-digits"), "--name", model,
            "--model-repository", str(repository), "--models-config", str(models_config),
            "--prepared-root", str(params.path("prepared_data")),
        ]) == 0  # fmt: skip
    config = ServingConfig(
        model_repository=str(repository), models_config=str(models_config),
        rest_port=0, grpc_port=0,
    )  # fmt: skip
    entries, path = model_entries(config)
    server = EmbeddedServer(config, entries, path)
    server.start()
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)
        test = load_prepared("digits", params.path("prepared_data")).splits["test"]
        images = np.asarray(test.x[:4]).tolist()

        vit = http.post("/v1/models/vit:predict", json={"instances": images})
        assert vit.status_code == 200, vit.text
        answers = vit.json()["predictions"]  # a classifier: probabilities and class names
        assert np.allclose(probabilities_of(answers).sum(axis=1), 1.0, atol=1e-4)
        assert all(len(row["classes"]) == len(row["probabilities"]) for row in answers)

        scores = http.post("/v1/models/autoencoder:predict", json={"instances": images})
        assert scores.status_code == 200, scores.text
        rows = scores.json()["predictions"]
        assert {"anomaly_score", "is_anomaly"} == set(rows[0])
        assert all(r["anomaly_score"] >= 0 and r["is_anomaly"] in (0, 1) for r in rows)

        noise = np.random.default_rng(0).normal(size=(3, 32)).tolist()
        generated = http.post("/v1/models/gan:predict", json={"instances": noise})
        assert generated.status_code == 200, generated.text
        pictures = np.asarray(generated.json()["predictions"])
        assert pictures.shape == (3, 8, 8, 1) and 0 <= pictures.min() <= pictures.max() <= 240

        bad = http.post("/v1/models/gan:predict", json={"instances": images})
        assert bad.status_code == 400  # images where noise is expected: a client error
    finally:
        server.stop()


def test_dvc_evaluate_stage_rescores_the_saved_models(params, autoencoder_metrics, gan_metrics):
    from kerasops.pipelines.steps.evaluate import evaluate_run

    rescored = evaluate_run(params, "autoencoder", "digits")  # from the saved anomaly scorer
    for key in ("anomaly_threshold", "anomaly_roc_auc", "test_reconstruction_mse"):
        assert rescored[key] == pytest.approx(autoencoder_metrics[key], rel=1e-3)
    rescored = evaluate_run(params, "gan", "digits")  # from the saved generator
    assert rescored["test_frechet_distance"] == pytest.approx(
        gan_metrics["test_frechet_distance"], rel=1e-3
    )
