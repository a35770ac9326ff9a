"""Tracking configuration: each project's params pick its own store within one process."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from kerasops.pipelines.config import load_params
from kerasops.pipelines.tracking import store as tracking
from tests.conftest import write_params


def project_params(root):  # noqa: ANN001, ANN201
    root.mkdir(parents=True)
    return load_params(write_params(root))


def test_configure_leaves_no_uri_behind_for_the_next_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = project_params(tmp_path / "one")
    second = project_params(tmp_path / "two")
    tracking.configure(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    tracking.configure(second)
    assert mlflow.get_tracking_uri() == tracking.tracking_uri(second)
    assert str(tmp_path / "two" / "artifacts" / "mlflow.db") in mlflow.get_tracking_uri()


def test_a_user_exported_uri_still_wins(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure(project_params(tmp_path / "one"))
    assert mlflow.get_tracking_uri() == uri and os.environ["MLFLOW_TRACKING_URI"] == uri


def test_compare_shows_each_familys_headline_metric_beside_its_baseline():
    from kerasops.pipelines.tracking.runs import headline

    lm = {"test_perplexity": 3.2, "test_accuracy": 0.5, "baseline_unigram_perplexity": 27.0}
    assert headline(lm) == {
        "metric": "perplexity",
        "score": 3.2,
        "baseline": "27.0000 (unigram)",
        "seconds": None,
    }
    classifier = {"test_accuracy": 0.96, "baseline_majority_accuracy": 0.23, "train_seconds": 9.0}
    assert headline(classifier)["baseline"] == "0.2300 (majority)"
    assert headline(classifier)["seconds"] == 9.0
    assert headline({"anomaly_roc_auc": 0.9})["metric"] == "anomaly_auc"
    segmenter = {"test_mean_iou": 0.9, "test_pixel_accuracy": 0.99}
    segmenter["baseline_background_mean_iou"] = 0.08
    assert headline(segmenter)["metric"] == "mean_iou"
    assert headline(segmenter)["baseline"] == "0.0800 (all background)"
    spotter = {"test_accuracy": 0.95, "baseline_majority_accuracy": 0.1}
    spotter |= {"unseen_voice_accuracy": 0.9, "baseline_unseen_voice_majority_accuracy": 0.1}
    assert headline(spotter)["metric"] == "unseen_voice_accuracy"  # the voice never heard
    assert headline(spotter)["score"] == 0.9
    assert headline(spotter)["baseline"] == "0.1000 (majority)"
    assert headline({})["metric"] is None  # a failed run has no metrics


def test_report_links_follow_the_mlflow_ui_in_use(tmp_path, monkeypatch):
    import json
    import subprocess
    import sys

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = project_params(tmp_path / "project")
    assert tracking.ui_url(params) == "http://127.0.0.1:5000"  # nothing running: the default
    tracking.record_ui(params, "http://127.0.0.1:5123")  # what `kerasops ui --port 5123` writes
    assert tracking.ui_url(params) == "http://127.0.0.1:5123"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    ui_file = params.path("artifacts") / tracking.UI_FILE
    ui_file.write_text(json.dumps({"url": "http://127.0.0.1:5124", "pid": int(gone.stdout)}))
    assert tracking.ui_url(params) == "http://127.0.0.1:5000"  # that UI has stopped
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.ui_url(params) == "http://mlflow.internal:5000"  # a server is its own UI


def test_a_dataset_input_that_another_run_logged_at_the_same_moment_is_tried_again(
    tmp_path, monkeypatch
):
    """Two tune processes logging one new dataset at once: MLflow looks it up, then inserts it,
    and the later insert breaks the store's unique constraint (seen in CI as a failed trial).
    The step tries again and reuses the row; any other MLflow error is raised at once."""
    from kerasops.pipelines.steps import train  # deferred: loads TensorFlow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = project_params(tmp_path / "p")
    tracking.configure(params)
    (params.path("prepared_data") / "digits").mkdir(parents=True)
    real, calls = mlflow.log_input, []

    def racing(dataset, context=None):
        calls.append(dataset.name)
        if len(calls) == 1:  # what the store raised in CI
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                "datasets.name, datasets.digest"
            )
        return real(dataset, context=context)

    monkeypatch.setattr(train.mlflow, "log_input", racing)
    with mlflow.start_run() as run:
        train.log_data_input(params, "digits", "abc123")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert calls == ["digits", "digits"]
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("digits", "abc123")]

    def broken(dataset, context=None):
        calls.append("broken")
        raise MlflowException("the tracking server is gone")

    monkeypatch.setattr(train.mlflow, "log_input", broken)
    with mlflow.start_run(), pytest.raises(MlflowException, match="gone"):
        train.log_data_input(params, "digits", "abc123")
    assert calls.count("broken") == 1
