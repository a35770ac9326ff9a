"""Shadow traffic: `serving.shadow.<model>` mirrors a share of a model's requests to another of
its versions. The client gets the primary's answer; the shadow's answer (the challenger's own
prediction) is logged beside it, paired by request id; a shadow target that does not answer
leaves the primary answering and shows in the status and the metrics."""

from __future__ import annotations

import collections
import dataclasses
import json
import shutil
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kerasops.errors import ConfigError
from kerasops.pipelines.cli import main as kerasops
from kerasops.pipelines.config import load_params
from kerasops.pipelines.config.retraining import RetrainingConfig
from kerasops.pipelines.steps import monitor
from kerasops.pipelines.tracking import store as tracking
from kerasops.serving.config import ServingConfig, ShadowConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.prediction_log import read_prediction_logs
from kerasops.serving.server import EmbeddedServer, model_entries
from kerasops.serving.shadow import parse_origin
from tests.conftest import write_params
from tests.serving_helpers import digit_images, digits_cnn, regressor

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

CHAMPION_SEED, CHALLENGER_SEED = 2, 7
MODELS = """
model_config_list {{
  config {{
    name: "digits"
    base_path: "{root}/models/digits"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "challenger" value: 1 }}
    version_labels {{ key: "champion" value: 2 }}
    logging_config {{
      log_collector_config {{ type: "file" filename_prefix: "digits/predictions" }}
      sampling_config {{ sampling_rate: 0.0 }}
    }}
  }}
}}
"""


def serving_config(root, shadow: dict | None = None) -> ServingConfig:
    values = {"rest_port": 0, "grpc_port": 0, "prediction_log_dir": str(root / "logs")}
    return ServingConfig.from_dict(
        {
            "model_repository": str(root / "models"),
            "models_config": str(root / "models.config"),
            "shadow": shadow or {},
            **values,
        }
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """digits version 1: the challenger (another seed); version 2: the champion (latest)."""
    root = tmp_path_factory.mktemp("shadow")
    config = serving_config(root)
    export_saved_model(digits_cnn(seed=CHALLENGER_SEED), "digits", config=config, version=1)
    export_saved_model(digits_cnn(seed=CHAMPION_SEED), "digits", config=config, version=2)
    (root / "models.config").write_text(MODELS.format(root=root))
    return root


def serve(root, shadow: dict) -> tuple[EmbeddedServer, httpx.Client]:
    config = serving_config(root, shadow)
    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    return server, httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text page (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return 0.0


def wait_for_shadows(http: httpx.Client, count: int, timeout: float = 30.0) -> str:
    """The metrics page once `count` shadow calls have ended (they run off the request path)."""
    deadline = time.monotonic() + timeout
    while True:
        page = http.get("/monitoring/prometheus/metrics").text
        done = sum(
            metric(page, "kerasops_serving_shadow_requests_total", model="digits", outcome=o)
            for o in ("answered", "failed")
        )
        if done >= count or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def pairs(root) -> dict[str, dict[str, object]]:
    """Logged records by request id and role."""
    found: dict[str, dict[str, object]] = collections.defaultdict(dict)
    for entry in read_prediction_logs(root / "logs"):
        origin = parse_origin(entry.log_metadata.request_origin)
        assert origin is not None, "every record of a mirrored request is marked"
        found[origin["request"]][origin["role"]] = entry
    return found


def outputs_of(entry) -> np.ndarray:
    return tf.make_ndarray(entry.predict_log.response.outputs["probabilities"])


def test_shadow_traffic_reaches_the_challenger_and_not_the_client(repository, tmp_path):
    images = digit_images(6, seed=3)
    champion = digits_cnn(seed=CHAMPION_SEED).predict(images, verbose=0)
    challenger = digits_cnn(seed=CHALLENGER_SEED).predict(images, verbose=0)
    assert np.abs(champion - challenger).max() > 1e-2  # two different models
    server, http = serve(repository, {"digits": {"label": "challenger", "fraction": 1.0}})
    try:
        answers = []
        for i in range(4):  # REST v1
            body = {"instances": images[i : i + 1].tolist()}
            reply = http.post("/v1/models/digits:predict", json=body)
            assert reply.status_code == 200, reply.text
            answers.append(reply.json()["predictions"][0]["probabilities"])
        v2 = {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1],
                 "data": images[4].reshape(-1).tolist()}
            ]
        }  # fmt: skip
        reply = http.post("/v2/models/digits/infer", json=v2).json()
        answers.append(next(o["data"] for o in reply["outputs"] if o["name"] == "probabilities"))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(images[5:6]))
            grpc_reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
            answers.append(tf.make_ndarray(grpc_reply.outputs["probabilities"])[0])
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "digits"
            _, call = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus.with_call(
                status_request
            )
        page = wait_for_shadows(http, 6)
        status = http.get("/v1/models/digits").json()
    finally:
        server.stop()

    # the client got the champion's answers, REST v1, v2 and gRPC alike
    np.testing.assert_allclose(np.asarray(answers, "float32"), champion, atol=1e-5)
    assert (
        metric(page, "kerasops_serving_shadow_requests_total", model="digits", outcome="answered")
        == 6
    )
    assert metric(page, "kerasops_serving_shadow_latency_seconds_count", model="digits") == 6
    assert status["shadow"] == {
        "target": "label 'challenger'", "fraction": 1.0, "version": "1", "state": "AVAILABLE"
    }  # fmt: skip
    trailing = dict(call.trailing_metadata())
    assert json.loads(trailing["kerasops-shadow"])["state"] == "AVAILABLE"

    # both answers logged (sampling_rate 0: only mirrored requests), paired by request id
    logged = pairs(repository)
    assert len(logged) == 6 and all(set(p) == {"primary", "shadow"} for p in logged.values())
    by_input = {}
    for pair in logged.values():
        primary, shadow = pair["primary"], pair["shadow"]
        assert primary.log_metadata.model_spec.version.value == 2
        assert shadow.log_metadata.model_spec.version.value == 1
        sent = tf.make_ndarray(primary.predict_log.request.inputs["image"])
        np.testing.assert_array_equal(
            sent, tf.make_ndarray(shadow.predict_log.request.inputs["image"])
        )
        index = int(np.argmin(np.abs(images - sent).reshape(len(images), -1).sum(axis=1)))
        by_input[index] = (outputs_of(primary)[0], outputs_of(shadow)[0])
    assert sorted(by_input) == list(range(6))
    for i, (primary, shadow) in by_input.items():
        np.testing.assert_allclose(primary, champion[i], atol=1e-5)
        np.testing.assert_allclose(shadow, challenger[i], atol=1e-5)  # the challenger's own


def test_a_quarter_of_the_requests_are_mirrored(repository):
    """fraction 0.25 over 400 requests: 100 expected, sd 8.7; the bounds are 4 sd (a false
    alarm in 1 run of 15,000)."""
    shutil.rmtree(repository / "logs", ignore_errors=True)
    server, http = serve(repository, {"digits": {"version": 1, "fraction": 0.25}})
    body = {"instances": digit_images(1).tolist()}
    try:
        for _ in range(400):
            assert http.post("/v1/models/digits:predict", json=body).status_code == 200
        time.sleep(0.5)
        page = wait_for_shadows(http, 1)
    finally:
        server.stop()
    mirrored = metric(
        page, "kerasops_serving_shadow_requests_total", model="digits", outcome="answered"
    )
    assert 65 <= mirrored <= 135, mirrored
    assert len(pairs(repository)) == mirrored  # every mirrored request logged as a pair


def test_a_shadow_target_that_is_not_loaded_leaves_the_primary_answering(repository, tmp_path):
    broken = repository / "models" / "digits" / "3"  # a version that fails to load
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    config = repository / "models.config"
    original = config.read_text()
    config.write_text(original.replace("versions: 2 }", "versions: 2 versions: 3 }"))
    images = digit_images(3, seed=4)
    expected = digits_cnn(seed=CHAMPION_SEED).predict(images, verbose=0)
    try:
        for shadow in ({"label": "nowhere", "fraction": 1.0}, {"version": 3, "fraction": 1.0}):
            server, http = serve(repository, {"digits": shadow})
            try:
                reply = http.post("/v1/models/digits:predict", json={"instances": images.tolist()})
                status = http.get("/v1/models/digits").json()
                page = http.get("/monitoring/prometheus/metrics").text
            finally:
                server.stop()
            assert reply.status_code == 200
            got = [row["probabilities"] for row in reply.json()["predictions"]]
            np.testing.assert_allclose(np.asarray(got, "float32"), expected, atol=1e-5)
            assert status["shadow"]["state"] == "NOT_LOADED"
            assert status["shadow"]["error_message"]
            skipped = metric(
                page, "kerasops_serving_shadow_skipped_total", model="digits", reason="not_loaded"
            )
            assert skipped == 1
        assert any(
            s["state"] == "END" and s["version"] == "3" for s in status["model_version_status"]
        )
    finally:
        config.write_text(original)
        shutil.rmtree(broken)


def test_shadow_config_is_strict():
    config = ServingConfig.from_dict(
        {"shadow": {"digits": {"label": "challenger", "fraction": 0.1}}}
    )
    assert config.shadow == {"digits": ShadowConfig(label="challenger", fraction=0.1)}
    bad = [
        ({"digits": {"label": "c", "version": 2, "fraction": 0.1}}, "serving.shadow.digits needs"),
        ({"digits": {"fraction": 0.1}}, "serving.shadow.digits needs a label or a version"),
        ({"digits": {"label": "c", "fraction": 1.5}}, "serving.shadow.digits.fraction must"),
        ({"digits": {"label": "c", "share": 0.5}}, "unknown key serving.shadow.digits.share"),
        ({"digits": {"label": "c", "fraction": "half"}}, "serving.shadow.digits.fraction"),
    ]
    for shadow, message in bad:
        with pytest.raises(ConfigError, match=message):
            ServingConfig.from_dict({"shadow": shadow}, prefix="serving.")


# -- kerasops monitor --compare and the gate's live rules ---------------------------------------


def shadow_project(root: Path, shadow: dict) -> EmbeddedServer:
    params = load_params(root / "params.yaml")
    config = params.serving.at_root(root)
    config = dataclasses.replace(config, rest_port=0, grpc_port=0, shadow=shadow)
    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    return server


@pytest.mark.slow  # five exports, two servers and three MLflow runs
def test_compare_reports_agreement_difference_and_latency_of_a_known_pair(project, capfd):
    from kerasops.pipelines.steps.gate import judge

    write_params(project, monitoring={"drift_psi": 0.2, "min_requests": 10})
    params = load_params(project / "params.yaml")
    config = params.serving.at_root(project)
    for version, seed, label in ((1, CHALLENGER_SEED, "challenger"), (2, CHAMPION_SEED, "twin"),
                                 (3, CHAMPION_SEED, "champion")):  # fmt: skip
        export_saved_model(
            digits_cnn(seed), "digits", config=config, version=version, labels=[label]
        )
    for version, seed, label in ((1, 1, "challenger"), (2, 3, "champion")):
        export_saved_model(regressor(seed), "reg", config=config, version=version, labels=[label])
    images, features = digit_images(24, seed=5), np.random.default_rng(5).normal(size=(24, 4))

    def send(server: EmbeddedServer, count: int, with_regressor: bool) -> None:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)
        for i in range(count):
            body = {"instances": images[i : i + 1].tolist()}
            assert http.post("/v1/models/digits:predict", json=body).status_code == 200
            if with_regressor:
                body = {"instances": features[i : i + 1].tolist()}
                assert http.post("/v1/models/reg:predict", json=body).status_code == 200
        wait_for_shadows(http, count)

    shadows = {"digits": {"label": "twin", "fraction": 1.0}, "reg": {"version": 1, "fraction": 1.0}}
    server = shadow_project(project, {k: ShadowConfig(**v) for k, v in shadows.items()})
    try:
        send(server, 12, True)
    finally:
        server.stop()
    server = shadow_project(project, {"digits": ShadowConfig(label="challenger", fraction=1.0)})
    try:
        send(server, 24, False)
    finally:
        server.stop()

    assert kerasops(["monitor", "digits", "--compare", "champion", "twin"]) == 0
    out = capfd.readouterr().out
    assert (
        "12 mirrored requests (12 rows)" in out
        and "Agreement (same predicted class): **1.0000**" in out
    )
    twin = json.loads((project / "artifacts/monitoring/digits-compare.json").read_text())
    assert twin["versions"] == [3, 2] and twin["agreement"] == 1.0
    lenient = RetrainingConfig.from_dict({"gate": {"live_agreement": {"minimum": 0.99}}}).rules()
    assert judge(params, "digits", {}, None, lenient).passed

    assert kerasops(["monitor", "digits", "--compare", "3", "challenger"]) == 0
    other = json.loads((project / "artifacts/monitoring/digits-compare.json").read_text())
    champion = digits_cnn(CHAMPION_SEED).predict(images, verbose=0).argmax(-1)
    expected = float(
        np.mean(champion == digits_cnn(CHALLENGER_SEED).predict(images, verbose=0).argmax(-1))
    )
    assert other["pairs"] == 24 and other["agreement"] == pytest.approx(expected) and expected < 1
    for role in ("champion", "challenger"):
        p50, p99 = other["latency_ms"][role]["p50"], other["latency_ms"][role]["p99"]
        assert 0 < p50 <= p99
    decision = judge(params, "digits", {}, None, lenient)
    assert not decision.passed and "live_agreement" in decision.reasons()[0]
    tracking.configure(params, retraining=True)
    run = MlflowClient().get_run(other["run_id"])
    assert run.data.tags["kind"] == "shadow-compare"
    assert run.data.metrics["live_agreement"] == pytest.approx(expected)
    assert run.data.metrics["live_latency_ms"] == pytest.approx(
        other["latency_ms"]["challenger"]["p99"]
    )

    assert kerasops(["monitor", "reg", "--compare", "champion", "challenger"]) == 0
    reg = json.loads((project / "artifacts/monitoring/reg-compare.json").read_text())
    sent = features[:12].astype("float32")
    difference = np.abs(
        regressor(3).predict(sent, verbose=0) - regressor(1).predict(sent, verbose=0)
    )
    assert reg["kind"] == "regressor" and reg["agreement"] is None
    assert reg["mean_abs_diff"] == pytest.approx(float(difference.mean()), rel=1e-4)

    capfd.readouterr()
    assert kerasops(["monitor", "reg", "--compare", "champion", "nobody"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no label 'nobody'" in err
    assert kerasops(["monitor", "digits", "--compare", "twin", "challenger"]) == 2
    assert "0 mirrored requests of digits" in capfd.readouterr().err

    # drift monitoring reads the clients' answers only, never the shadow's
    logs = monitor.logged_requests(project / "artifacts/prediction_logs", "digits", None)
    assert len([e for e in logs if monitor._not_shadow(e)]) == 36 and len(logs) == 72


def test_loop_benchmark_writes_untracked_results_and_only_its_own_section(tmp_path):
    import argparse
    import importlib.util
    import sys

    path = Path(__file__).parents[1] / "benchmarks" / "serving" / "loop.py"
    spec = importlib.util.spec_from_file_location("loop_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for added in (path.parent, path.parents[2]):  # the script puts both first on sys.path
        sys.path.remove(str(added))
    default = module.output_paths(argparse.Namespace(update_results=False, output=str(tmp_path)))
    assert default == (tmp_path / "results.json", tmp_path / "RESULTS.md")
    tracked = module.output_paths(argparse.Namespace(update_results=True, output=str(tmp_path)))
    assert tracked == (path.parent / "loop_results.json", path.parents[1] / "RESULTS.md")

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another section\n\nkept\n")
    module.write_results("## Loop, first run", results)
    module.write_results("## Loop, second run", results)
    text = results.read_text()
    assert "## Another section\n\nkept" in text and "first run" not in text
    assert text.count(f"<!-- {module.SECTION}:begin -->") == 1 and "## Loop, second run" in text
