"""docker-compose.yml's structure (no Docker engine runs here, so the file is checked as data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kerasops.serving.config import BatchingConfig, ServingConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_tf_serving_on_a_pinned_gpu_image_with_gpu_reservation(compose: dict) -> None:
    service = compose["services"]["tf-serving"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+-gpu", service["image"])
    devices = _gpu_devices(service)
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@pytest.mark.parametrize("name", ["tf-serving", "tf-serving-cpu"])
def test_tf_serving_ports_volumes_and_flags(compose: dict, name: str) -> None:
    service = compose["services"][name]
    assert {"8500:8500", "8501:8501"} <= {str(p) for p in service["ports"]}
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert mounts["/serving"] == "./artifacts/serving"  # models/ and models.config
    flags = dict(arg.lstrip("-").split("=", 1) for arg in service["command"])
    assert flags["model_config_file"] == "/serving/models.config"
    repository = ServingConfig().models_config_base_path  # base paths written by export
    assert repository == "/serving/models" and mounts["/serving"] + "/models" == (
        "./" + ServingConfig().model_repository
    )
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        host_file = mounts[flags[flag]]
        assert (ROOT / host_file).is_file(), host_file
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert "healthcheck" in service


def test_cpu_variant_has_no_gpu(compose: dict) -> None:
    service = compose["services"]["tf-serving-cpu"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", service["image"])
    assert not _gpu_devices(service)


def test_mlflow_uses_postgres_and_an_s3_store(compose: dict) -> None:
    services = compose["services"]
    command = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://" in command and "s3://" in command
    assert "MLFLOW_S3_ENDPOINT_URL" in services["mlflow"]["environment"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "minio" in services


def test_prefect_server_and_worker_with_health_checks(compose: dict) -> None:
    services = compose["services"]
    assert "prefect-server" in services and "prefect-worker" in services
    for name, service in services.items():
        if service.get("restart") != "no":  # one-shot jobs excepted
            assert "healthcheck" in service, name
    worker_env = services["prefect-worker"]["environment"]
    assert worker_env["PREFECT_API_URL"].startswith("http://prefect-server:4200")


def test_every_built_image_has_its_dockerfile(compose: dict) -> None:
    for service in compose["services"].values():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file()


def test_batching_file_matches_the_default_serving_config() -> None:
    text = (ROOT / "serving/deploy/batching.config").read_text()
    values = dict(re.findall(r"^(\w+) \{ value: (\d+) \}", text, flags=re.MULTILINE))
    defaults = BatchingConfig()
    for key, value in values.items():
        assert int(value) == getattr(defaults, key), key
