"""Infra-validation of a challenger (TFX's InfraValidator): its export staged in a repository of
its own, loaded by the embedded server, and asked its warmup requests over REST and gRPC; the
answers must equal the in-process predictions and arrive within the latency bound."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from kerasops.config import require
from kerasops.pipelines.config import Params
from kerasops.pipelines.retraining.challenger import Challenger
from kerasops.pipelines.steps.export import export_model
from kerasops.pipelines.steps.runner import named
from kerasops.pipelines.tracking import registry
from kerasops.pipelines.tracking.registry import TAG_DATA, load_version
from kerasops.serving.client import GrpcClient, RestClient
from kerasops.serving.config import ServingConfig, TlsConfig
from kerasops.serving.server import EmbeddedServer, model_entries


def staging_config(params: Params, folder: Path) -> ServingConfig:
    """The serving config of a staging repository in `folder` (`models/`, `models.config`).

    The staging server is private to the check, on loopback: it answers without the inference
    token, TLS or model control the production server may require (it validates the export's
    answers and latency, not the transport)."""
    return params.serving.replace(
        model_repository=str(folder / "models"),
        models_config=str(folder / "models.config"),
        host="127.0.0.1",
        allow_reload=False,
        inference_token_env="",
        inference_token_file="",
        tls=TlsConfig(),
    )


def stage_export(params: Params, name: str, version: str) -> Path:
    """Export registered `version` of `name` to a staging repository of its own, as
    `<staging>/models/<name>/1`, with warmup requests made of held-out examples."""
    staging = params.path("artifacts") / "serving" / "staging" / f"{name}-v{version}"
    shutil.rmtree(staging, ignore_errors=True)  # a half-finished earlier try
    requests = params.retraining.infra_validation.requests
    details = registry.client().get_model_version(name, version)
    result = export_model(
        params,
        load_version(name, version),
        name,
        version=1,
        serving=staging_config(params, staging).replace(num_warmup_records=requests),
        info={
            "registered_model": name,
            "registered_version": str(version),
            "mlflow_run_id": details.run_id,
            "data_version": details.tags.get(TAG_DATA, ""),
        },
    )
    return result.path


@dataclasses.dataclass(frozen=True)
class InfraReport:
    """What the staged export did when served: per-protocol latencies and answer differences."""

    passed: bool
    staged: str
    requests: int
    latency_ms: dict[str, list[float]]
    max_abs_diff: dict[str, float]
    problems: tuple[str, ...]

    def metrics(self) -> dict[str, float]:
        values = {"infra.requests": float(self.requests)}
        for protocol, times in self.latency_ms.items():
            if times:
                values[f"infra.{protocol}_p50_ms"] = float(np.median(times))
                values[f"infra.{protocol}_max_ms"] = float(np.max(times))
        for protocol, diff in self.max_abs_diff.items():
            values[f"infra.{protocol}_max_abs_diff"] = diff
        return values


def warmup_inputs(version_dir: Path) -> list[dict[str, np.ndarray]]:
    """The inputs of every PredictRequest in the export's warmup file."""
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    require(path.is_file(), f"{version_dir} has no warmup requests to validate with")
    batches = []
    for record in tf.data.TFRecordDataset(str(path)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        inputs = entry.predict_log.request.inputs
        batches.append({key: tf.make_ndarray(tensor) for key, tensor in inputs.items()})
    return batches


def infra_validate(params: Params, name: str, version: str, staged: Path) -> InfraReport:
    """Serve the staged export in the embedded server, send its warmup requests over REST and
    gRPC, and compare each answer with the in-process prediction and the latency bound."""
    bound = params.retraining.infra_validation
    serving = staging_config(params, staged.parent.parent.parent).replace(rest_port=0, grpc_port=0)
    model = load_version(name, version).model
    batches = warmup_inputs(staged)
    entries, config_path = model_entries(serving)
    server = EmbeddedServer(serving, entries, config_path)
    server.start()
    try:
        latency, diffs = _exchange(server, name, model, batches)
    finally:
        server.stop()
    problems = []
    for protocol, times in latency.items():
        slow = [t for t in times if t > bound.latency_bound_ms]
        if slow:
            problems.append(
                f"{protocol}: {len(slow)} of {len(times)} answers slower than "
                f"{bound.latency_bound_ms:g} ms (slowest {max(slow):.1f} ms)"
            )
        if diffs[protocol] > bound.tolerance:
            problems.append(
                f"{protocol}: answers differ from in-process predictions by up to "
                f"{diffs[protocol]:.3g} (tolerance {bound.tolerance:g})"
            )
    return InfraReport(not problems, str(staged), len(batches), latency, diffs, tuple(problems))


def _exchange(
    server: Any, name: str, model: Any, batches: list[dict[str, np.ndarray]]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Send every batch over both protocols; return latencies (ms) and, per protocol, the
    largest difference from the in-process answer (for text answers: 0 if equal, else inf)."""
    host = server.config.host
    clients = {
        "rest": RestClient(f"http://{host}:{server.rest_port}"),
        "grpc": GrpcClient(f"{host}:{server.grpc_port}"),
    }
    latency: dict[str, list[float]] = {p: [] for p in clients}
    diffs = {p: 0.0 for p in clients}
    try:
        for inputs in batches:
            (batch,) = inputs.values()  # one named input: the served signature's
            expected = outputs_of(model.predict(tf.constant(batch), verbose=0))
            for protocol, serving_client in clients.items():
                started = time.perf_counter()
                outputs = serving_client.predict(name, inputs, version=1)
                latency[protocol].append((time.perf_counter() - started) * 1000)
                if set(expected) == {""}:  # one unnamed output: the signature names it,
                    # beside a classifier's `classes` (its class names)
                    outputs = {"": outputs[served_name(model, outputs)]}
                diff = max(difference(outputs[key], expected[key]) for key in expected)
                diffs[protocol] = max(diffs[protocol], diff)
    finally:
        for serving_client in clients.values():
            serving_client.close()
    return latency, diffs


def served_name(model: Any, outputs: dict[str, Any]) -> str:
    """Which served output answers for a model's single output: the one named like its output
    layer (e.g. `probabilities` beside `classes`), else the only one."""
    names = list(getattr(model, "output_names", None) or [])
    if names and names[0] in outputs:
        return names[0]
    others = [key for key in outputs if key != "classes"]
    return others[0] if len(others) == 1 else next(iter(outputs))


def outputs_of(predicted: Any) -> dict[str, np.ndarray]:
    """A model's predictions by output name ("" for a single unnamed output)."""
    if isinstance(predicted, dict):
        return {key: np.asarray(value) for key, value in predicted.items()}
    return {"": np.asarray(predicted)}


def difference(served: Any, local: np.ndarray) -> float:
    """Largest |served - local| of numbers; 0 for equal texts, inf for unequal ones."""
    served = np.asarray(served).reshape(local.shape)
    if local.dtype.kind in "OSU":
        as_text = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v))
        return 0.0 if np.array_equal(as_text(served), as_text(local)) else float("inf")
    return float(np.max(np.abs(served.astype("float64") - local.astype("float64")), initial=0))


@named("infra-validate")
def stage_and_validate(params: Params, challenger: Challenger) -> InfraReport:
    """The cycle's infra-validation step: stage the challenger's export, then prove it serves."""
    staged = stage_export(params, challenger.name, challenger.version)
    return infra_validate(params, challenger.name, challenger.version, staged)
