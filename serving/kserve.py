"""KServe InferenceService manifests for a model of the repository (`kerasops deploy kserve`).

Two variants, same model folder:

* `tensorflow`: KServe's TensorFlow runtime (TF Serving; the v1 REST/gRPC API) reads the model
  folder (`<storage_uri>/<name>`: its numbered versions) that `kerasops export` wrote.
* `kerasops`: the kerasops server image (docker/serve.Dockerfile) reads the repository
  (`<storage_uri>`) and answers the v1 API and the Open Inference Protocol (v2) on one port.

Field names are KServe's `serving.kserve.io/v1beta1` ones (InferenceService, PredictorSpec,
ModelSpec); tests/test_serving_kserve.py checks them against the CRD's.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from kerasops.errors import ConfigError
from kerasops.serving.repository import check_model_name, list_versions

API_VERSION = "serving.kserve.io/v1beta1"
HTTP_PORT = 8080  # the one port Knative routes to a predictor container
DEFAULT_IMAGE = "kerasops-serve:latest"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class KServeOptions:
    """What the manifests say besides the model: where it lives, image, scaling, canary."""

    storage_uri: str
    image: str = DEFAULT_IMAGE
    tf_version: str = "2.21.0"
    namespace: str = ""
    min_replicas: int = 1
    max_replicas: int = 3
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    scale_target: int = 8
    canary_traffic_percent: int | None = None

    def validate(self) -> None:
        if not re.match(r"^[a-z][a-z0-9+.-]*://", self.storage_uri):
            raise ConfigError(
                f"--storage-uri {self.storage_uri!r} must be a URI KServe's storage "
                "initializer reads (s3://, gs://, pvc://, https://...)"
            )
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError("replicas: need 0 <= --min-replicas <= --max-replicas, max >= 1")
        if self.scale_target < 1:
            raise ConfigError("--scale-target must be >= 1")
        percent = self.canary_traffic_percent
        if percent is not None and not 0 <= percent <= 100:
            raise ConfigError("--canary-traffic-percent must be between 0 and 100")


def service_name(model: str) -> str:
    """The model name as a Kubernetes name (DNS label): lower case, '_' and '.' as '-'."""
    name = re.sub(r"[_.]", "-", check_model_name(model).lower())
    if not _DNS_LABEL.match(name):
        raise ConfigError(
            f"model name {model!r} does not make a Kubernetes name ({name!r}): use at most 63 "
            "letters, digits and '-'"
        )
    return name


def inference_service(
    model: str, options: KServeOptions, variant: Literal["tensorflow", "kerasops"]
) -> dict[str, Any]:
    """One InferenceService manifest (a plain dict, ready for YAML)."""
    options.validate()
    name = service_name(model)
    metadata: dict[str, Any] = {"name": name if variant == "tensorflow" else f"{name}-v2"}
    if options.namespace:
        metadata["namespace"] = options.namespace
    metadata["labels"] = {"app.kubernetes.io/part-of": "kerasops", "kerasops/model": model}
    predictor: dict[str, Any] = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "scaleMetric": options.scale_metric,
        "scaleTarget": options.scale_target,
    }
    if options.canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = options.canary_traffic_percent
    base = options.storage_uri.rstrip("/")
    if variant == "tensorflow":
        predictor["model"] = {
            "modelFormat": {"name": "tensorflow"},
            "runtimeVersion": options.tf_version,
            "protocolVersion": "v1",
            "storageUri": f"{base}/{model}",
        }
    else:
        predictor["containers"] = [_kerasops_container(base, options.image)]
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}  # fmt: skip


def _kerasops_container(repository_uri: str, image: str) -> dict[str, Any]:
    """The kerasops server as a custom predictor: KServe's storage initializer copies
    STORAGE_URI to /mnt/models; the server answers v1 and v2 REST on HTTP_PORT."""

    def probe(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": HTTP_PORT}, "periodSeconds": 10}

    return {
        "name": "kserve-container",
        "image": image,
        "args": [
            "kerasops",
            "serve",
            "--model-repository",
            "/mnt/models",
            "--host",
            "0.0.0.0",
            "--rest-port",
            str(HTTP_PORT),
            "--grpc-port",
            "8081",
        ],  # fmt: skip
        "env": [{"name": "STORAGE_URI", "value": repository_uri}],
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": probe("/v2/health/ready"),
        "livenessProbe": probe("/v2/health/live"),
    }


def write_kserve_manifests(
    model: str, repository: Path, options: KServeOptions, output: Path
) -> list[Path]:
    """Write `inferenceservice-tensorflow.yaml` and `inferenceservice-kerasops.yaml` for a model
    of the local repository under `output`; raise ConfigError when the model is not there."""
    if not list_versions(repository / check_model_name(model)):
        raise ConfigError(
            f"model {model!r} has no version in {repository}: export it first "
            f"(kerasops export ... --name {model})"
        )
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in ("tensorflow", "kerasops"):
        manifest = inference_service(model, options, variant)
        path = output / f"inferenceservice-{variant}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    return written
