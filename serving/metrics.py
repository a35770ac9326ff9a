"""Prometheus metrics of the embedded server, in a registry of its own (nothing global)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
UNKNOWN_MODEL = "_unknown"


class ServingMetrics:
    """Request count and latency per model/API/protocol, batch sizes and loaded versions."""

    def __init__(self) -> None:

        self.registry = CollectorRegistry()
        self._requests = Counter(
            "kerasops_serving_requests",
            "Requests answered, by model, API, protocol and status code.",
            ["model", "api", "protocol", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "kerasops_serving_request_latency_seconds",
            "Time from a request's arrival to its answer.",
            ["model", "api", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "kerasops_serving_batch_size",
            "Rows per signature call after dynamic batching.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._loaded = Gauge(
            "kerasops_serving_loaded_versions",
            "Model versions loaded and answering.",
            ["model"],
            registry=self.registry,
        )
        self._logged = Counter(
            "kerasops_serving_prediction_logs",
            "PredictionLog records written, by model.",
            ["model"],
            registry=self.registry,
        )
        self._dropped = Counter(
            "kerasops_serving_prediction_logs_dropped",
            "PredictionLog records dropped (queue_full, write_error), by model.",
            ["model", "reason"],
            registry=self.registry,
        )
        self._shadow = Counter(
            "kerasops_serving_shadow_requests",
            "Mirrored requests the shadow version answered or failed, by model and outcome.",
            ["model", "outcome"],
            registry=self.registry,
        )
        self._shadow_skipped = Counter(
            "kerasops_serving_shadow_skipped",
            "Requests drawn for mirroring but not mirrored "
            "(busy, not_loaded, same_version, error).",
            ["model", "reason"],
            registry=self.registry,
        )
        self._shadow_latency = Histogram(
            "kerasops_serving_shadow_latency_seconds",
            "The shadow version's signature time on mirrored requests.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], tuple[object, object]] = {}
        self.known_models: set[str] = set()

    def observe(self, model: str, api: str, protocol: str, code: str, seconds: float) -> None:
        model = model if model in self.known_models else UNKNOWN_MODEL
        key = (model, api, protocol, code)
        children = self._children.get(key)
        if children is None:
            children = (
                self._requests.labels(model, api, protocol, code),
                self._latency.labels(model, api, protocol),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def batch_observer(self, model: str) -> Callable[[int], None]:
        return self._batch.labels(model).observe

    def prediction_logged(self, model: str) -> None:
        self._logged.labels(model).inc()

    def prediction_dropped(self, model: str, reason: str) -> None:
        self._dropped.labels(model, reason).inc()

    def shadow_answered(self, model: str, outcome: str, seconds: float | None = None) -> None:
        self._shadow.labels(model, outcome).inc()
        if seconds is not None:
            self._shadow_latency.labels(model).observe(seconds)

    def shadow_skipped(self, model: str, reason: str) -> None:
        self._shadow_skipped.labels(model, reason).inc()

    def set_loaded(self, model: str, versions: list[int]) -> None:
        self.known_models.add(model)
        self._loaded.labels(model).set(len(versions))

    def render(self) -> tuple[bytes, str]:

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
