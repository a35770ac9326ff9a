"""The GPU images and compose services share one TensorFlow version and the same service
settings the integration test runs (PostgreSQL stores, artifacts over HTTP, loopback ports)."""

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
    default = f"${{TF_VERSION:-{tf_pin}}}"
    services = compose["services"]
    assert services["tfserving-gpu"]["image"] == f"tensorflow/serving:{default}-gpu"
    for name in ("train", "prefect-worker-gpu", "mlflow"):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/train.Dockerfile"
        assert build["args"]["TF_VERSION"] == default
    for source in re.findall(r"^COPY (\S+)/ ", dockerfile, re.M):
        assert (REPO / source).is_dir(), source


def test_gpu_services_reserve_nvidia_devices(compose):
    for name in ("train", "prefect-worker-gpu", "tfserving-gpu"):
        (device,) = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_services_use_postgresql_and_the_client_urls(compose):
    services = compose["services"]
    mlflow = services["mlflow"]["command"]
    assert "--backend-store-uri postgresql+psycopg2://" in mlflow
    assert "@postgres:5432/mlflow" in mlflow and "--artifacts-destination /mlartifacts" in mlflow
    database = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert database.startswith("postgresql+asyncpg://")
    assert database.endswith("@postgres:5432/prefect")
    init = (REPO / "docker/postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow;" in init and "CREATE DATABASE prefect;" in init
    for name in ("train", "prefect-worker-gpu"):
        environment = services[name]["environment"]
        assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert "prefecthq/prefect:3.8.8-" in services["prefect-server"]["image"]  # pyproject's pin


def test_published_ports_bind_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
