"""BERT-style pretraining then fine-tuning: the 80/10/10 masking, both builders through the
harness, and, on bbc_news, a pretraining run whose text encoder a classifier fine-tunes from,
linked in MLflow and `kerasops lineage`, exported and answering REST and gRPC predicts."""

from __future__ import annotations

import json

import grpc
import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from kerasops.errors import ConfigError
from kerasops.models import build_model, preset_values
from kerasops.models.bert.masking import mask_tokens
from kerasops.pipelines.cli import main as kerasops
from kerasops.pipelines.config import load_params
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.runs import compare_runs, describe_run
from tests.conftest import write_params
from tests.harness import run_builder_test

TEXT = {
    "kind": "text",
    "task": "classification",
    "shape": [],
    "num_outputs": 3,
    "vocabulary": ["the", "cat", "dog", "sat", "ran"],
    "sequence_length": 6,
}


def test_masking_follows_bert_80_10_10_and_never_picks_padding_or_unknown_words():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(4000, 40)).astype("int32")  # 1: out of vocabulary
    ids[:, 30:] = 0  # padding
    seed = tf.constant([1, 2])
    inputs, targets, weights = mask_tokens(tf.constant(ids), 6, 0.15, 50, 50, seed)
    masked, positions = inputs["token_ids"].numpy(), inputs["positions"].numpy()
    targets, weights = targets.numpy(), weights.numpy()

    known = (ids > 1).sum(axis=1)
    assert (weights.sum(axis=1) == np.minimum(np.ceil(known * 0.15), 6)).all()
    assert (np.take_along_axis(ids, positions, 1) == targets).all()
    chosen = weights > 0
    assert (targets[chosen] > 1).all()  # never padding, never the unknown id
    now = np.take_along_axis(masked, positions, 1)[chosen]
    shares = [(now == 50).mean(), (now == targets[chosen]).mean()]
    assert shares == pytest.approx([0.8, 0.1], abs=0.02)  # the rest: a random known word
    assert ((now == 50) | (now == targets[chosen]) | ((now > 1) & (now < 50))).all()
    untouched = np.ones_like(ids, bool)
    np.put_along_axis(untouched, positions, ~chosen, 1)
    assert (masked[untouched] == ids[untouched]).all()  # only chosen positions change

    again, _, _ = mask_tokens(tf.constant(ids), 6, 0.15, 50, 50, seed)
    assert (again["token_ids"].numpy() == masked).all()  # stateless: same seed, same masks


def test_both_builders_pass_the_harness(tmp_path):
    pretrainer = {**preset_values("bert_masked_lm", "bert_masked_lm_tiny"), "inputs": TEXT}
    example = {
        "token_ids": np.array([[2, 3, 7, 4, 0, 0], [5, 6, 2, 3, 4, 5]], "int32"),
        "positions": np.array([[2], [0]], "int32"),
    }
    run_builder_test("bert_masked_lm", pretrainer, example, (2, 1, 7), tmp_path)
    scratch = {**preset_values("bert_classifier", "bert_classifier_tiny"), "inputs": TEXT}
    texts = np.array(["the cat sat", "dog ran away fast", ""], dtype=object)
    run_builder_test("bert_classifier", scratch, texts, (3, 3), tmp_path)
    windowed = {**scratch, "windows_per_text": 1}  # the default reads 4
    (tmp_path / "windowed").mkdir()
    run_builder_test("bert_classifier", windowed, texts, (3, 3), tmp_path / "windowed")


def test_the_classifier_reads_its_windows_past_the_first():
    """Texts alike in their first window (6 tokens) differ only after it: one window cannot
    tell them apart, two windows can (the encoder still sees 6 positions at a time)."""
    head = "the cat sat the dog ran"
    texts = np.array([f"{head} cat cat", f"{head} dog dog"], dtype=object)
    base = {**preset_values("bert_classifier", "bert_classifier_tiny"), "inputs": TEXT}
    for windows, alike in ((1, True), (2, False)):
        keras.utils.set_random_seed(0)
        model = build_model("bert_classifier", {**base, "windows_per_text": windows})
        first, second = model.predict(texts, verbose=0)
        assert np.allclose(first, second) is alike
    assert model.get_layer("encoder").input.shape == (None, 6)


def test_the_label_budget_streams_its_chosen_texts_from_the_shards(tmp_path):
    from kerasops.data import load_prepared, prepare_dataset
    from kerasops.models.bert.recipe import label_budget

    rows = [f"text number {i},{'abc'[i % 3]}" for i in range(3000)]  # > 2 batches of 1024
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    prepare_dataset("t", {"source": "text_csv", "path": "t.csv"}, tmp_path, tmp_path)
    prepared = load_prepared("t", tmp_path)
    budget = label_budget(prepared, 300, seed=1).splits["train"]
    every = load_prepared("t", tmp_path).splits["train"]
    texts, labels = np.asarray(every.x), np.asarray(every.y)
    chosen = np.flatnonzero(np.isin(texts, budget.x))
    assert len(budget.x) == len(chosen) == 300
    np.testing.assert_array_equal(budget.x, texts[chosen])
    np.testing.assert_array_equal(budget.y, labels[chosen])
    assert prepared.splits["train"]._x is None  # the split itself was never decoded whole


def test_a_missing_or_foreign_backbone_is_one_clear_error(tmp_path):
    config = {"inputs": TEXT, "backbone": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match="no model.keras there; train one first"):
        build_model("bert_classifier", config)


def test_a_fine_tune_must_follow_a_run_of_the_pipeline(tmp_path):
    runs = {"bert_masked_lm-bbc_news": {"model": "bert_masked_lm", "dataset": "bbc_news"}}
    tune = {"model": "bert_classifier", "dataset": "bbc_news", "backbone": "bert-nope"}
    pipeline = {
        "datasets": ["bbc_news"],
        "runs": runs,
        "fine_tunes": {"bert_classifier-bbc_news": tune},
    }
    with pytest.raises(ConfigError, match="backbone 'bert-nope' is not in pipeline.runs"):
        load_params(write_params(tmp_path, pipeline=pipeline))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        write_params(root)
        yield load_params(root / "params.yaml")


@pytest.fixture(scope="module")
def pretrained(project):
    """A short pretraining on bbc_news' texts, then a fine-tune from it on 200 labels."""
    small = ["--set", "max_tokens=2000", "--set", "sequence_length=32", "--set", "epochs=2"]
    small += ["--set", "windows_per_text=2"]
    assert kerasops(["train", "bert_masked_lm", "--dataset", "bbc_news", *small]) == 0
    runs = project.path("artifacts") / "runs"
    backbone = runs / "bert_masked_lm-bbc_news"
    assert kerasops([
        "train", "bert_classifier", "--dataset", "bbc_news", "--set", f"backbone={backbone}",
        "--set", "train_examples=200", "--set", "epochs=1", "--set", "fine_tune_epochs=1",
        "--set", "sequence_length=64",
    ]) == 0  # fmt: skip
    return backbone, runs / "bert_classifier-bbc_news"


@pytest.mark.slow
def test_the_fine_tune_names_its_backbone_run_in_mlflow_and_lineage(project, pretrained):
    backbone, classifier = pretrained
    pretraining = json.loads((backbone / "config.json").read_text())
    fine_tune = json.loads((classifier / "config.json").read_text())
    masked = json.loads((backbone / "metrics.json").read_text())
    assert {"test_masked_accuracy", "baseline_masked_perplexity"} <= set(masked)
    assert masked["test_masked_perplexity"] < 2 * masked["baseline_masked_perplexity"]

    tracking.configure(project)
    params = MlflowClient().get_run(fine_tune["run_id"]).data.params
    assert params["backbone_run_id"] == pretraining["run_id"]
    assert int(params["train_examples_used"]) == pytest.approx(200, abs=5)
    assert int(params["phase1_trainable_params"]) < int(params["phase2_trainable_params"])
    lines = describe_run(project, fine_tune["run_id"])
    assert f"backbone  {pretraining['run_id']}" in lines
    assert lines.count("run       ") == 2  # the fine-tune's block, then its backbone's
    tracking.configure(project)
    shown = {row["model"]: row for row in compare_runs(project, dataset="bbc_news")}
    assert shown["bert_masked_lm"]["metric"] == "masked_perplexity"
    assert "unigram" in shown["bert_masked_lm"]["baseline"]


@pytest.mark.slow
def test_both_export_and_answer_rest_and_grpc_predicts(project, pretrained, tmp_path):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from kerasops.serving.config import ServingConfig
    from kerasops.serving.server import EmbeddedServer, model_entries

    repository, models_config = tmp_path / "models", tmp_path / "models.config"
    for folder, name in zip(pretrained, ("encoder", "classifier"), strict=True):
        assert kerasops([
            "export", str(folder), "--name", name, "--model-repository", str(repository),
            "--models-config", str(models_config),
            "--prepared-root", str(project.path("prepared_data")),
        ]) == 0  # fmt: skip
    config = ServingConfig(
        model_repository=str(repository), models_config=str(models_config),
        rest_port=0, grpc_port=0,
    )  # fmt: skip
    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    texts = ["the government announced new taxes on fuel", "the striker scored twice"]
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)
        embedded = http.post("/v1/models/encoder:predict", json={"instances": texts})
        assert embedded.status_code == 200, embedded.text
        vectors = np.asarray(embedded.json()["predictions"])
        assert vectors.shape == (2, 64) and np.isfinite(vectors).all()
        answered = http.post("/v1/models/classifier:predict", json={"instances": texts})
        assert answered.status_code == 200, answered.text
        rows = answered.json()["predictions"]
        assert np.allclose([sum(r["probabilities"]) for r in rows], 1.0, atol=1e-4)

        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "encoder"
            request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts))
            reply = stub.Predict(request, timeout=30)
        np.testing.assert_allclose(
            tf.make_ndarray(reply.outputs["embedding"]), vectors, rtol=1e-4, atol=1e-5
        )
    finally:
        server.stop()


FINE_TUNE_PIPELINE = {
    "datasets": ["bbc_news"],
    "runs": {"bert_masked_lm-bbc_news": {"model": "bert_masked_lm", "dataset": "bbc_news"}},
    "fine_tunes": {
        "bert_classifier-bbc_news": {
            "model": "bert_classifier",
            "dataset": "bbc_news",
            "backbone": "bert_masked_lm-bbc_news",
        }
    },
}


def test_a_fine_tune_picked_without_its_backbone_run_needs_that_run_on_disk(tmp_path, capsys):
    params = write_params(tmp_path, pipeline=FINE_TUNE_PIPELINE)
    argv = ["--params", str(params), "run-pipeline", "--model", "bert_classifier"]
    assert kerasops(argv) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("error: fine-tune bert_classifier-bbc_news starts from run ")
    assert "select it too (--model bert_masked_lm) or train it first" in error
    assert not (tmp_path / "artifacts" / "runs").exists()


@pytest.mark.slow
def test_the_pipeline_trains_the_fine_tunes_after_their_backbone_runs(tmp_path, monkeypatch):
    """`run-pipeline` (as the `fine_tune` DVC stage): the pretraining, then the classifier from
    its folder, both evaluated; the report has a row for each."""
    from kerasops.pipelines.steps.pipeline import run_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    models = {
        "bert_masked_lm": {"windows_per_text": 1,
                           "train": {"epochs": 1, "max_tokens": 2000, "sequence_length": 32}},
        "bert_classifier": {"train_examples": 50, "fine_tune_epochs": 1,
                            "train": {"epochs": 1, "sequence_length": 32}},
    }  # fmt: skip
    params = load_params(write_params(tmp_path, pipeline=FINE_TUNE_PIPELINE, models=models))
    result = run_pipeline(params)
    assert [row["model"] for row in result.rows] == ["bert_masked_lm", "bert_classifier"]
    runs = tmp_path / "artifacts" / "runs"
    fine_tune = json.loads((runs / "bert_classifier-bbc_news" / "config.json").read_text())
    backbone = runs / "bert_masked_lm-bbc_news"
    assert fine_tune["model_config"]["backbone"] == str(backbone)
    pretraining = json.loads((backbone / "config.json").read_text())
    tracking.configure(params)
    logged = MlflowClient().get_run(fine_tune["run_id"]).data.params
    assert logged["backbone_run_id"] == pretraining["run_id"]
    assert (tmp_path / "artifacts" / "metrics" / "bert_classifier-bbc_news.json").is_file()
