"""Prediction logging in TF Serving's format: a models.config `logging_config` makes the embedded
server write sampled PredictionLog records for REST, gRPC and OIP v2 calls, published whole;
a bad prefix is refused; a full queue drops and counts, never blocks."""

from __future__ import annotations

import time

import grpc
import httpx
import numpy as np
import pytest

from kerasops.serving import prediction_log
from kerasops.serving.config import ServingConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.prediction_log import (
    IN_PROGRESS,
    LoggingSpec,
    PredictionLogger,
    read_prediction_logs,
)
from kerasops.serving.repository import mapping_for, read_models_config, update_models_config
from kerasops.serving.server import EmbeddedServer, ServerError, model_entries
from tests.serving_helpers import digit_images, digits_cnn, text_classifier

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

LOGGED = """
model_config_list {{
  config {{
    name: "digits"
    base_path: "{root}/models/digits"
    model_platform: "tensorflow"
    logging_config {{
      log_collector_config {{ type: "file" filename_prefix: "digits/predictions" }}
      sampling_config {{ sampling_rate: {rate} }}
    }}
  }}
  config {{ name: "text" base_path: "{root}/models/text" model_platform: "tensorflow" }}
}}
"""


def serving_config(root, **extra) -> ServingConfig:
    values = {"prediction_log_dir": str(root / "logs"), "rest_port": 0, "grpc_port": 0}
    return ServingConfig(
        model_repository=str(root / "models"),
        models_config=str(root / "models.config"),
        **{**values, **extra},
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("logged")
    config = serving_config(root)
    export_saved_model(digits_cnn(seed=2), "digits", config=config)
    export_saved_model(text_classifier(), "text", config=config)
    return root


def serve(root, rate: float, **extra) -> EmbeddedServer:
    (root / "models.config").write_text(LOGGED.format(root=root, rate=rate))
    config = serving_config(root, **extra)
    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    return server


def test_rest_grpc_and_v2_calls_are_logged_as_prediction_logs(repository):
    images = digit_images(5)
    server = serve(repository, 1.0)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)
        for i in range(3):
            answer = http.post(
                "/v1/models/digits:predict", json={"instances": images[i : i + 1].tolist()}
            )
            assert answer.status_code == 200, answer.text
        v2 = {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1],
                 "data": images[3].reshape(-1).tolist()}
            ]
        }  # fmt: skip
        assert http.post("/v2/models/digits/infer", json=v2).status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(images[4:5]))
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        assert http.post("/v1/models/text:predict", json={"instances": ["good"]}).is_success
        deadline = time.monotonic() + 60  # the writer process answers for what it wrote
        while (
            'prediction_logs_total{model="digits"} 5.0'
            not in (metrics := http.get("/monitoring/prometheus/metrics").text)
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    finally:
        server.stop()

    logs = read_prediction_logs(repository / "logs")
    assert len(logs) == 5  # the text model has no logging_config
    assert not list((repository / "logs").rglob(f"*{IN_PROGRESS}"))  # all published
    sent = np.stack([tf.make_ndarray(e.predict_log.request.inputs["image"])[0] for e in logs])
    np.testing.assert_allclose(sent, images)
    last = logs[-1]
    assert last.log_metadata.model_spec.name == "digits"
    assert last.log_metadata.model_spec.version.value >= 1
    assert last.log_metadata.model_spec.signature_name == "serving_default"
    assert last.log_metadata.sampling_config.sampling_rate == 1.0
    np.testing.assert_allclose(
        tf.make_ndarray(last.predict_log.response.outputs["probabilities"]),
        tf.make_ndarray(reply.outputs["probabilities"]),
        rtol=1e-6,
    )
    assert 'kerasops_serving_prediction_logs_total{model="digits"}' in metrics


def test_sampling_rate_zero_writes_nothing_and_a_prefix_outside_the_log_folder_is_refused(
    repository, tmp_path
):
    server = serve(repository, 0.0, prediction_log_dir=str(tmp_path / "quiet"))
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)
        body = {"instances": digit_images(2).tolist()}
        assert http.post("/v1/models/digits:predict", json=body).status_code == 200
    finally:
        server.stop()
    assert read_prediction_logs(tmp_path / "quiet") == []

    outside = LOGGED.format(root=repository, rate=1.0).replace(
        "digits/predictions", str(tmp_path / "elsewhere" / "p")
    )
    (repository / "models.config").write_text(outside)
    config = serving_config(repository)
    with pytest.raises(ServerError, match="is outside"):
        EmbeddedServer(config, *model_entries(config))


def test_a_re_export_keeps_the_logging_config(repository, tmp_path):
    path = tmp_path / "models.config"
    path.write_text(LOGGED.format(root=repository, rate=0.25))
    config = serving_config(repository)
    mapping = mapping_for(config)
    update_models_config(path, "digits", repository / "models" / "digits", config.version_policy,
                         labels={"stable": 1}, mapping=mapping)  # fmt: skip
    digits = next(e for e in read_models_config(path, mapping) if e.name == "digits")
    assert digits.logging == LoggingSpec("digits/predictions", 0.25)
    assert digits.label_map() == {"stable": 1}


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    class Counts:
        def __init__(self):
            self.dropped, self.logged = [], 0

        def prediction_dropped(self, model, reason):
            self.dropped.append(reason)

        def prediction_logged(self, model):
            self.logged += 1

    counts = Counts()
    logger = PredictionLogger(tmp_path, counts, queue_size=1)
    spec = LoggingSpec("m/p", 1.0)
    inputs, outputs = {"x": np.zeros((1, 2), "float32")}, {"y": np.ones((1, 1), "float32")}
    for _ in range(200):
        logger.offer(spec, "m", 1, "serving_default", inputs, outputs)
    logger.close()
    assert counts.dropped and set(counts.dropped) == {"queue_full"}
    assert counts.logged + len(counts.dropped) == 200
    assert len(read_prediction_logs(tmp_path)) == counts.logged


STRING_VALUES = [
    np.array([[b"0", b"1", b"ten"]], dtype=object),  # the classes output of a classifier
    np.array([["été", "b"]], dtype=object),  # str elements: UTF-8, as make_tensor_proto writes
    np.array([b"a", b"bc"], dtype="S2"),
    np.array([["x"], ["yz"]], dtype="U2"),
    np.array(b"scalar", dtype=object),
    np.empty((0, 3), dtype=object),
]


@pytest.mark.parametrize("value", STRING_VALUES, ids=lambda v: f"{v.dtype}{v.shape}")
def test_string_tensors_reach_the_writer_as_bytes_and_become_make_tensor_protos_message(value):
    # the serving process sends a string array's elements, not a TensorProto it built itself
    # (tf.make_tensor_proto costs about 20 us a call there); the writer builds the same message
    inputs = prediction_log._unflat(prediction_log._flat({"classes": value}))
    assert isinstance(inputs["classes"], prediction_log._Strings)
    built = tf.make_tensor_proto(np.zeros(0, "float32"))  # any proto, overwritten below
    built.Clear()
    prediction_log._fill_tensor(built, inputs["classes"])
    assert built == tf.make_tensor_proto(value)


def test_object_arrays_of_other_values_are_left_to_make_tensor_proto():
    for value in (np.array([b"a", 1], dtype=object), np.array([1.5, 2.5], dtype=object)):
        assert prediction_log._string_elements(value) is None  # make_tensor_proto decides
