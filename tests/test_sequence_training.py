"""Training the sequence models for real: each beats its trivial baseline, is tracked in MLflow,
and its exported text-in, text-out model answers REST predict on the embedded server."""

from __future__ import annotations

import httpx
import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.errors import KerasopsError
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps.evaluate import evaluate_run
from kerasops.pipelines.tracking import store as tracking
from kerasops.serving.config import ServingConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.server import EmbeddedServer, model_entries
from kerasops.serving.sources import dataset_examples, load_from_folder
from tests.conftest import train_run, write_params

pytestmark = pytest.mark.slow  # trains the language model and translator

DATASETS = {
    "bbc_news_lm": {"max_documents": 150, "window": 48},
    "dates": {"examples": 3000},
}
MODELS = {
    "language_model": {"max_new_tokens": 24, "train": {"epochs": 1, "learning_rate": 0.003}},
    "translator": {"train": {"epochs": 4, "batch_size": 32, "learning_rate": 0.003}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both models trained once in one project (its params.yaml as a user would write it)."""
    root = tmp_path_factory.mktemp("sequence_project")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        write_params(root, datasets=DATASETS, models=MODELS)
        params = load_params(root / "params.yaml")
        language_model = train_run(
            params, "language_model", "bbc_news_lm", preset="language_model_tiny"
        )
        translator = train_run(params, "translator", "dates", preset="translator_tiny")
        yield params, language_model, translator


def test_language_model_beats_the_unigram_perplexity(trained):
    params, result, _ = trained
    metrics = result.metrics
    assert metrics["test_perplexity"] < 0.75 * metrics["baseline_unigram_perplexity"]
    assert metrics["test_accuracy"] > metrics["baseline_unigram_accuracy"]
    assert metrics["test_bits_per_character"] == pytest.approx(np.log2(metrics["test_perplexity"]))
    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "bbc_news_lm"
    assert run.data.params["model.max_new_tokens"] == "24"
    assert run.data.metrics["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    saved = keras.saving.load_model(result.run_dir / "model.keras")  # the generation model
    assert [i.name for i in saved.inputs] == ["prompt"]
    assert len(saved.predict(np.array(["The "], dtype=object), verbose=0)[0].decode()) == 24


def test_translator_beats_copying_the_source(trained):
    params, _, result = trained
    metrics = result.metrics
    assert metrics["test_exact_match"] > metrics["baseline_copy_exact_match"] + 0.3
    assert metrics["test_bleu"] > metrics["baseline_copy_bleu"] + 0.3
    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert len(MlflowClient().get_metric_history(result.run_id, "val_loss")) >= 1


def test_evaluate_step_rescores_the_saved_text_models(trained):
    # `kerasops evaluate` (the DVC evaluate stage) loads model.keras, the text-in, text-out
    # model, and scores the trained model inside it: the same figures as training reported.
    params, language_model, translator = trained
    rescored = evaluate_run(params, "language_model", "bbc_news_lm")
    assert rescored["test_perplexity"] == pytest.approx(
        language_model.metrics["test_perplexity"], rel=1e-4
    )
    rescored = evaluate_run(params, "translator", "dates")
    assert rescored["test_exact_match"] == pytest.approx(translator.metrics["test_exact_match"])


def test_models_refuse_a_dataset_of_the_other_task(trained):
    params, _, _ = trained
    with pytest.raises(KerasopsError, match="needs a language_modeling one"):
        train_run(params, "language_model", "dates")
    with pytest.raises(KerasopsError, match="needs a translation one"):
        train_run(params, "translator", "bbc_news_lm")


def test_exported_models_answer_rest_predict_on_the_embedded_server(trained, tmp_path):
    params, language_model, translator = trained
    config = ServingConfig(
        model_repository=str(tmp_path / "models"),
        models_config=str(tmp_path / "models.config"),
        rest_port=0,
        grpc_port=0,
    )
    expected = {}
    for name, result, request in (
        ("generator", language_model, ["The government said", ""]),
        ("dates", translator, ["3 March 2021", "december 31st, 1999"]),
    ):
        source = load_from_folder(result.run_dir)
        examples, _ = dataset_examples(source.run_config, str(params.path("prepared_data")), 2)
        export = export_saved_model(source.model, name, config=config, warmup_examples=examples)
        assert export.signatures == ("serving_default",) and export.warmup_records == 2
        outputs = source.model.predict(np.array(request, dtype=object), verbose=0)
        expected[name] = (request, [o.decode("utf-8") for o in outputs])

    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=60) as http:
            for name, (request, outputs) in expected.items():
                answer = http.post(f"/v1/models/{name}:predict", json={"instances": request})
                assert answer.status_code == 200, answer.text
                assert answer.json()["predictions"] == outputs
            bad = http.post("/v1/models/dates:predict", json={"instances": [[1.5, 2.5]]})
            assert 400 <= bad.status_code < 500 and "error" in bad.json()
    finally:
        server.stop()
    assert all(len(text) == 24 for text in expected["generator"][1])
    assert expected["dates"][1][0].count("-") == 2 or expected["dates"][1][0]
