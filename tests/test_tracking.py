"""Tracking configuration: each project's params pick its own store within one process."""

from __future__ import annotations

import os

import mlflow

from pipelines import tracking
from pipelines.settings import load_params
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
