"""The retraining cycle end to end on real data (digits, a small MLP), in one project folder.

The tests run in order and share state, as successive scheduled cycles do: the first cycle
promotes; a rerun without new data stops early; a worse challenger is rejected; failures injected
at train, evaluate, infra-validate, publish and the alias move leave the champion and the served
version untouched and a clean rerun then promotes without duplicating versions, while a running
embedded server switches to the new version; rollback restores the previous champion.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from kerasops.config import load_yaml
from kerasops.pipelines.retraining.report import CycleReport
from kerasops.pipelines.steps.publish import RetrainingError, publish, served_versions
from kerasops.pipelines.steps.rollback import rollback
from kerasops.pipelines.tracking import registry
from tests.conftest import write_params

pytestmark = pytest.mark.slow  # real retraining cycles under Prefect's test server

NAME = "mlp-digits"
GATE = {"test_accuracy": {"minimum": 0.5, "max_regression": 0.02}}


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("retraining")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        write_params(
            root,
            train={"epochs": 3, "batch_size": 64, "patience": 3, "seed": 1},
            models={"mlp": {"preset": "mlp_small"}},
            serving={"poll_interval_s": 0.2, "num_warmup_records": 4},
            retraining={"gate": GATE, "infra_validation": {"requests": 4}},
        )
        yield root


@pytest.fixture(scope="module")
def params(project):
    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.tracking import store as tracking

    params = load_params(project / "params.yaml")
    tracking.configure(params)
    return params


@pytest.fixture(scope="module")
def state():
    return {}


def cycle(project: Path, **kwargs) -> CycleReport:
    from kerasops.pipelines.flows.retraining import retraining_flow

    return retraining_flow("mlp", "digits", params_path=str(project / "params.yaml"), **kwargs)


def snapshot(params) -> dict:
    """What a failed step must not change: aliases' champion/previous and the served versions."""
    aliases = registry.aliases(NAME)
    config = Path(params.serving.models_config)
    return {
        "champion": aliases.get("champion"),
        "previous": aliases.get("previous"),
        "served": served_versions(params, NAME),
        "models.config": config.read_text() if config.exists() else None,
    }


def test_first_cycle_promotes_on_absolute_thresholds(project, params, state):
    report = cycle(project)
    assert report.outcome == "promoted", report.to_markdown()
    assert report.decision.champion is None
    assert {c.rule for c in report.decision.checks} == {"minimum"}
    assert report.infra.passed and report.infra.requests == 4
    assert set(report.infra.latency_ms) == {"rest", "grpc"}
    assert registry.aliases(NAME) == {"champion": "1"}
    assert served_versions(params, NAME) == {1: "1"}
    assert report.publication.served_version == 1
    steps = ["detect", "validate", "train", "evaluate", "infra_validate", "promote"]
    assert list(report.steps) == steps
    state["first"] = report


def test_cycle_is_recorded_in_mlflow_and_as_a_prefect_artifact(params, state):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    runs = registry.client().search_runs(
        [registry.client().get_experiment_by_name("tests-retraining").experiment_id],
        "tags.`kerasops.flow` = 'retraining' and tags.`kerasops.outcome` = 'promoted'",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["challenger_version"] == "1"
    assert run.data.metrics["challenger.test_accuracy"] > 0.5
    assert run.data.metrics["step_seconds.train"] > 0
    assert run.data.metrics["infra.grpc_max_ms"] > 0
    text = registry.client().download_artifacts(run.info.run_id, "retraining/cycle.md")
    assert "# Retraining mlp-digits: promoted" in Path(text).read_text()

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["retraining-mlp-digits"])
                ),
                **_artifact_query_defaults(),
            )

    found = asyncio.run(artifacts())
    assert any("promoted" in (a.data or "") and "Wall time by step" in a.data for a in found)


def _artifact_query_defaults() -> dict:
    """Explicit filters: this Prefect server rejects null filter bodies."""
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter
    from prefect.client.schemas.sorting import ArtifactSort

    return {
        "flow_run_filter": FlowRunFilter(),
        "task_run_filter": TaskRunFilter(),
        "sort": ArtifactSort.CREATED_DESC,
        "limit": 20,
    }


@pytest.fixture(scope="module")
def server(params, state):
    """The embedded server on the real models.config, polling the repository."""
    from kerasops.serving.server import EmbeddedServer, model_entries

    config = params.serving.replace(rest_port=0, grpc_port=0)
    entries, path = model_entries(config)
    assert path == Path(config.models_config)
    running = EmbeddedServer(config, entries, path)
    running.start()
    yield running
    running.stop()


def served_answer(server, version_expected: int, timeout: float = 60.0) -> np.ndarray:
    """Poll the server until it serves `version_expected` by default; return its answer."""
    from kerasops.serving.client import GrpcClient, RestClient

    images = test_images(4)
    rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = rest.status(NAME)
            available = [
                int(v["version"])
                for v in status["model_version_status"]
                if v["state"] == "AVAILABLE"
            ]
            if available and max(available) == version_expected:
                break
            assert time.monotonic() < deadline, f"server still serves {available}"
            time.sleep(0.2)
        answer = rest.predict(NAME, images)["probabilities"]
    finally:
        rest.close()
    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as grpc_client:
        by_grpc = grpc_client.predict(NAME, {"image": images})["probabilities"]
    np.testing.assert_allclose(answer, by_grpc, atol=1e-5)
    return answer


def test_images(count: int) -> np.ndarray:
    from kerasops.data import load_prepared

    return np.asarray(load_prepared("digits", Path("data/prepared")).splits["test"].x[:count])


test_images.__test__ = False  # a helper, not a test


def in_process(version: str) -> np.ndarray:
    model = registry.load_version(NAME, version).model
    return np.asarray(model.predict(test_images(4), verbose=0))


def test_running_server_answers_with_the_champion(server):
    np.testing.assert_allclose(served_answer(server, 1), in_process("1"), atol=1e-5)


def test_no_new_data_finishes_early(project, params):
    before = snapshot(params)
    report = cycle(project)
    assert report.outcome == "no-new-data"
    assert list(report.steps) == ["detect"]
    assert snapshot(params) == before
    assert [str(v.version) for v in registry.model_versions(NAME)] == ["1"]


def test_worse_challenger_is_rejected_and_nothing_served_changes(project, params, server):
    before = snapshot(params)
    report = cycle(project, overrides=["train.epochs=0"], force=True)
    assert report.outcome == "rejected", report.to_markdown()
    assert not report.decision.passed and report.infra is None
    rules = {c.rule for c in report.decision.checks if not c.passed}
    assert rules == {"minimum", "max_regression"}
    assert snapshot(params) == before
    rejected = registry.client().get_model_version(NAME, report.challenger.version)
    assert rejected.tags[registry.TAG_GATE] == "rejected"
    assert "challenger" not in registry.aliases(NAME)
    np.testing.assert_allclose(served_answer(server, 1), in_process("1"), atol=1e-5)


BETTER = ["train.epochs=10"]


@pytest.mark.parametrize(
    "target, step",
    [
        ("kerasops.pipelines.retraining.challenger.train_model", "train"),
        ("kerasops.pipelines.steps.gate.evaluate_version", "evaluate"),
        ("kerasops.pipelines.retraining.infra.infra_validate", "infra_validate"),
        ("kerasops.pipelines.steps.publish.publish", "promote"),
        ("kerasops.pipelines.steps.publish.record_verdict", "promote"),  # after publish, aliases
    ],
)
def test_a_failed_step_leaves_champion_and_served_version(project, params, target, step):
    before = snapshot(params)

    def broken(*args, **kwargs):
        raise RuntimeError(f"injected failure in {target}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(target, broken)
        with pytest.raises(RuntimeError, match="injected failure"):
            cycle(project, overrides=BETTER, force=True)
    assert snapshot(params) == before
    repository = Path(params.serving.model_repository) / NAME
    assert sorted(p.name for p in repository.iterdir()) == ["1"]  # no leftovers
    failed = registry.client().search_runs(
        [registry.client().get_experiment_by_name("tests-retraining").experiment_id],
        "tags.`kerasops.outcome` = 'failed'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert failed.data.tags["kerasops.failed_step"] == step
    assert failed.info.status == "FAILED"


def test_rerun_after_failures_promotes_without_duplicates(project, params, server, state):
    report = cycle(project, overrides=BETTER, force=True)
    assert report.outcome == "promoted", report.to_markdown()
    assert report.challenger.trained is False  # the run trained before the injected failures
    same_inputs = [
        v
        for v in registry.model_versions(NAME)
        if v.tags.get(registry.TAG_PARAMS) == report.challenger.params_hash
    ]
    assert len(same_inputs) == 1
    new = report.challenger.version
    assert registry.aliases(NAME) == {"champion": new, "previous": "1"}
    assert served_versions(params, NAME) == {1: "1", 2: new}
    assert (
        report.decision.challenger["test_accuracy"]
        >= report.decision.champion["test_accuracy"] - 0.02
    )
    np.testing.assert_allclose(served_answer(server, 2), in_process(new), atol=1e-5)
    state["second"] = report

    again = publish(params, NAME, Path(report.infra.staged), new)
    assert not again.created and again.served_version == 2  # publishing twice: one version


def test_rollback_restores_the_previous_champion(params, server, state):
    from kerasops.pipelines.cli import main

    demoted = state["second"].challenger.version
    result = rollback(params, NAME)
    assert (result.champion, result.demoted) == ("1", demoted)
    assert registry.aliases(NAME) == {"champion": "1"}
    assert served_versions(params, NAME) == {1: "1", 2: demoted, 3: "1"}
    np.testing.assert_allclose(served_answer(server, 3), in_process("1"), atol=1e-5)
    assert registry.client().get_model_version(NAME, demoted).tags["kerasops.rolled_back"] == "true"

    with pytest.raises(RetrainingError, match="no 'previous' version"):
        rollback(params, NAME)
    assert main(["rollback", NAME]) == 2


def test_new_data_failing_validation_stops_the_flow_before_training(project, params):
    from kerasops.data.validation import ValidationError

    values = load_yaml((project / "params.yaml").read_text())
    values["datasets"] = {"digits": {"seed": 7}}  # a new data version: another split
    values["pipeline"] = {"validation": {"drift_fail_psi": 1.0e-6}}
    strict = project / "params-new-data.yaml"
    strict.write_text(yaml.safe_dump(values))
    before, versions = snapshot(params), len(registry.model_versions(NAME))

    from kerasops.pipelines.flows.retraining import retraining_flow

    with pytest.raises(ValidationError, match="drift"):
        retraining_flow("mlp", "digits", params_path=str(strict))
    assert snapshot(params) == before
    assert len(registry.model_versions(NAME)) == versions  # nothing trained or registered


def test_schedule_command_serves_the_flow_on_its_cron(project):
    """`kerasops schedule` in its own process, against the test Prefect API; stopped once the
    deployment is registered."""
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "kerasops", "--params", str(project / "params.yaml")]
    command += ["schedule", "cnn", "--dataset", "digits", "--cron", "30 2 * * 1-5"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    async def registered():
        async with get_client() as client:
            for _ in range(300):
                try:
                    return await client.read_deployment_by_name("retraining/retrain-cnn-digits")
                except Exception:  # noqa: BLE001 - not registered yet
                    assert process.poll() is None, process.stdout.read().decode()[-2000:]
                    await asyncio.sleep(0.5)
        raise AssertionError("the deployment was not registered within 150 s")

    try:
        stored = asyncio.run(registered())
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [s.schedule.cron for s in stored.schedules] == ["30 2 * * 1-5"]
    assert stored.parameters["model"] == "cnn" and stored.parameters["force"] is False


def test_bad_cron_and_bad_inputs_are_one_line_errors(project, capsys):
    from kerasops.pipelines.cli import main

    assert main(["schedule", "mlp", "--dataset", "digits", "--cron", "0 3 * *"]) == 2
    assert "not a valid cron expression" in capsys.readouterr().err
    assert main(["retrain", "mlp", "--dataset", "digits", "--set", "epochz=1"]) == 2
    assert "unknown key 'epochz'" in capsys.readouterr().err
