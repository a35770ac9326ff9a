"""`kerasops deploy kserve`: InferenceService manifests whose fields are KServe's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kerasops.pipelines.cli import main
from kerasops.serving.kserve import KServeOptions, inference_service, service_name

# Field names of KServe's serving.kserve.io/v1beta1 types, as its Python model classes map them
# (kserve 0.21.0: V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1PredictorSpec
# (the fields used here among its ~70), V1beta1ModelSpec, V1beta1ModelFormat) and Kubernetes'
# core/v1 Container, ContainerPort, EnvVar, Probe and HTTPGetAction.
INFERENCE_SERVICE = {"apiVersion", "kind", "metadata", "spec", "status"}
METADATA = {"name", "namespace", "labels", "annotations"}
SERVICE_SPEC = {"canary", "explainer", "predictor", "tracing", "transformer"}
PREDICTOR = {"canaryTrafficPercent", "containerConcurrency", "containers", "maxReplicas",
             "minReplicas", "model", "scaleMetric", "scaleMetricType", "scaleTarget",
             "tensorflow", "timeout", "batcher", "logger", "autoScaling"}  # fmt: skip
MODEL_SPEC = {"args", "command", "env", "image", "modelFormat", "name", "ports",
              "protocolVersion", "resources", "runtime", "runtimeVersion", "storage",
              "storageUri", "readinessProbe", "livenessProbe"}  # fmt: skip
MODEL_FORMAT = {"name", "version"}
CONTAINER = {"name", "image", "args", "command", "env", "ports", "readinessProbe",
             "livenessProbe", "resources", "volumeMounts"}  # fmt: skip
PORT = {"containerPort", "name", "protocol"}
PROBE = {"httpGet", "periodSeconds", "initialDelaySeconds", "timeoutSeconds"}


def check_fields(manifest: dict) -> None:
    assert set(manifest) <= INFERENCE_SERVICE
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert set(manifest["metadata"]) <= METADATA
    assert set(manifest["spec"]) <= SERVICE_SPEC
    predictor = manifest["spec"]["predictor"]
    assert set(predictor) <= PREDICTOR
    assert predictor["scaleMetric"] in {"cpu", "memory", "concurrency", "rps"}
    if "model" in predictor:
        assert set(predictor["model"]) <= MODEL_SPEC
        assert set(predictor["model"]["modelFormat"]) <= MODEL_FORMAT
    for container in predictor.get("containers", []):
        assert set(container) <= CONTAINER
        assert all(set(port) <= PORT for port in container["ports"])
        assert all(set(env) == {"name", "value"} for env in container["env"])
        for key in ("readinessProbe", "livenessProbe"):
            assert set(container[key]) <= PROBE and set(container[key]["httpGet"]) <= {
                "path", "port"}  # fmt: skip


def repository_with(root: Path, name: str) -> Path:
    (root / "models" / name / "1").mkdir(parents=True)
    return root / "models"


def test_deploy_kserve_writes_both_variants(project: Path, capsys: pytest.CaptureFixture) -> None:
    repository = repository_with(project, "cnn_digits")
    argv = ["deploy", "kserve", "cnn_digits", "--storage-uri", "s3://bucket/serving/models/",
            "--model-repository", str(repository), "--canary-traffic-percent", "10",
            "--min-replicas", "0", "--namespace", "ml"]  # fmt: skip
    assert main(argv) == 0
    folder = project / "artifacts" / "deploy" / "kserve" / "cnn_digits"
    assert "kubectl apply -f" in capsys.readouterr().out
    tensorflow = yaml.safe_load((folder / "inferenceservice-tensorflow.yaml").read_text())
    kerasops = yaml.safe_load((folder / "inferenceservice-kerasops.yaml").read_text())
    for manifest in (tensorflow, kerasops):
        check_fields(manifest)
        assert manifest["metadata"]["namespace"] == "ml"
        predictor = manifest["spec"]["predictor"]
        assert (predictor["minReplicas"], predictor["canaryTrafficPercent"]) == (0, 10)
    assert tensorflow["metadata"]["name"] == "cnn-digits"  # the served name TF Serving gets
    model = tensorflow["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "tensorflow"}
    assert model["storageUri"] == "s3://bucket/serving/models/cnn_digits"
    assert model["runtimeVersion"] == "2.21.0"
    [container] = kerasops["spec"]["predictor"]["containers"]
    assert {"name": "STORAGE_URI", "value": "s3://bucket/serving/models"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["args"][:4] == ["kerasops", "serve", "--model-repository", "/mnt/models"]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--storage-uri", "bucket/models"], "must be a URI"),
        (["--storage-uri", "s3://b/m", "--min-replicas", "4"], "replicas"),
        (["--storage-uri", "s3://b/m", "--canary-traffic-percent", "101"], "between 0 and 100"),
    ],
)
def test_deploy_kserve_bad_options_exit_2(
    project: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    repository = repository_with(project, "digits")
    code = main(["deploy", "kserve", "digits", "--model-repository", str(repository), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_deploy_kserve_unknown_model_exit_2(project: Path, capsys: pytest.CaptureFixture) -> None:
    repository = repository_with(project, "digits")
    argv = ["deploy", "kserve", "nope", "--storage-uri", "s3://b/m"]
    assert main([*argv, "--model-repository", str(repository)]) == 2
    assert "export it first" in capsys.readouterr().err


def test_service_names_are_dns_labels() -> None:
    assert service_name("CNN_digits.v2") == "cnn-digits-v2"
    with pytest.raises(ValueError):
        service_name("a" * 70)
    manifest = inference_service("text", KServeOptions("pvc://models"), "kerasops")
    assert manifest["metadata"]["name"] == "text-v2"
