"""The training image, the GPU worker and TF Serving share one TensorFlow version, and the compose
services use the settings the integration test runs (PostgreSQL stores, the servers' URLs)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # merge keys resolved


@pytest.fixture(scope="module")
def tf_pin() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d.split("==")[1] for d in dependencies if d.startswith("tensorflow==")]
    return pin


def test_training_image_and_tf_serving_share_the_pinned_tensorflow(compose, tf_pin):
    dockerfile = (REPO / "docker/train.Dockerfile").read_text()
    assert re.search(rf"^ARG TF_VERSION={re.escape(tf_pin)}$", dockerfile, re.M)
    services = compose["services"]
    assert services["tf-serving"]["image"] == f"tensorflow/serving:{tf_pin}-gpu"
    assert services["tf-serving-cpu"]["image"] == f"tensorflow/serving:{tf_pin}"
    for name in ("train", "prefect-worker-gpu"):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/train.Dockerfile"
        assert build["args"]["TF_VERSION"] == tf_pin
        assert services[name]["image"] == f"kerasops/train:{tf_pin}"
    for source in re.findall(r"^COPY (\S+)/ ", dockerfile, re.M):
        assert (REPO / source).is_dir(), source


def test_gpu_services_reserve_nvidia_devices_in_their_own_profiles(compose):
    services = compose["services"]
    for name in ("train", "prefect-worker-gpu", "tf-serving"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert services[name]["profiles"], name  # a CPU-only `docker compose up` skips them
    assert "gpu-pool" in services["prefect-worker-gpu"]["entrypoint"]
    assert "gpu-pool" not in services["prefect-worker"]["entrypoint"]


def test_services_use_postgresql_drivers_and_the_client_urls(compose):
    services = compose["services"]
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://" in mlflow  # as the integration test
    database = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert database.startswith("postgresql+asyncpg://")
    assert database.endswith("@postgres:5432/prefect")
    for name in ("train", "prefect-worker-gpu"):
        environment = services[name]["environment"]
        assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert services["train"]["restart"] == "no"
    # the server runs kerasops' own image: the pinned prefect and fastapi its CLI agrees with
    server = services["prefect-server"]
    assert server["build"]["dockerfile"] == "serving/deploy/kerasops.Dockerfile"
    assert server["image"] == services["prefect-worker"]["image"]
    assert server["entrypoint"][:3] == ["prefect", "server", "start"]
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {p.split("==")[0] for p in pins} >= {"prefect", "fastapi"}
