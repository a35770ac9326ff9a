"""Publishing into the serving repository: next version, idempotence, canary labels, withdrawal.

No model is trained: publishing copies a staged export folder, whatever it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps import publish as rt
from kerasops.serving.repository import INFO_FILE, mapping_for, read_models_config
from tests.conftest import write_params


def staged_export(root, registered_version: str):
    folder = root / "staging" / f"v{registered_version}" / "models" / "m" / "1"
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"stand-in for a SavedModel")
    info = {"model_name": "m", "version": 1, "registered_version": registered_version}
    (folder / "assets.extra" / INFO_FILE).write_text(json.dumps(info))
    return folder


def entry(params):
    config = params.serving
    (found,) = read_models_config(Path(config.models_config), mapping_for(config))
    return found


def test_publish_numbers_versions_once_per_registered_version(project):
    params = load_params(project / "params.yaml")
    repository = Path(params.serving.model_repository) / "m"
    (repository / ".publish-1-0badc0de").mkdir(parents=True)  # a publisher killed mid-copy
    first = rt.publish(params, "m", staged_export(project, "4"), "4")
    assert (first.served_version, first.created) == (1, True)
    again = rt.publish(params, "m", staged_export(project / "retry", "4"), "4")
    assert (again.served_version, again.created) == (1, False)
    second = rt.publish(params, "m", staged_export(project, "7"), "7")
    assert second.served_version == 2
    assert rt.served_versions(params, "m") == {1: "4", 2: "7"}
    assert sorted(p.name for p in repository.iterdir()) == ["1", "2"]  # no staging leftovers
    assert json.loads((repository / "2" / "assets.extra" / INFO_FILE).read_text())["version"] == 2
    assert entry(params).name == "m"

    rt.withdraw(params, "m", 2)
    assert rt.served_versions(params, "m") == {1: "4"}


def test_canary_labels_keep_the_stable_version(project):
    write_params(project, serving={"version_policy": {"policy": "latest", "num_versions": 2}})
    params = load_params(project / "params.yaml")
    rt.publish(params, "m", staged_export(project, "1"), "1")
    labels = rt.canary_labels(params, "m", "2")
    assert labels == {"stable": 1, "canary": None}
    rt.publish(params, "m", staged_export(project, "2"), "2", labels)
    assert entry(params).label_map() == {"stable": 1, "canary": 2}
    assert rt.canary_labels(params, "m", "2") == {"stable": 1, "canary": None}  # a retry


def test_canary_needs_two_loaded_versions(project):
    params = load_params(project / "params.yaml")
    with pytest.raises(rt.RetrainingError, match="num_versions to 2"):
        rt.canary_labels(params, "m", "1")


def test_a_failure_inside_a_publication_undoes_it(project, monkeypatch):
    params = load_params(project / "params.yaml")
    monkeypatch.setattr(rt, "aliases", lambda name: {})
    monkeypatch.setattr(rt, "set_aliases", lambda name, wanted: None)
    rt.publish(params, "m", staged_export(project, "1"), "1")
    config = Path(params.serving.models_config)
    text = config.read_text()
    with (
        pytest.raises(RuntimeError, match="alias store down"),
        rt.publication(params, "m", staged_export(project, "2"), "2", {"canary": None}),
    ):
        assert rt.served_versions(params, "m") == {1: "1", 2: "2"}
        raise RuntimeError("alias store down")
    assert rt.served_versions(params, "m") == {1: "1"}
    assert config.read_text() == text
