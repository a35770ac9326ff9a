"""The embedded server on loopback, called over HTTP and with the official gRPC stubs."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import shutil
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from kerasops.serving.config import BatchingConfig, ServingConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.server import EmbeddedServer, model_entries
from tests.serving_helpers import (
    digit_images,
    digits_cnn,
    probabilities_of,
    regressor,
    text_classifier,
)

pytest.importorskip("tensorflow_serving.apis")
tf = pytest.importorskip("tensorflow")

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)


class Env:
    """The running server, its clients and the models behind it."""

    def __init__(self, root: Path) -> None:
        (root / "control.token").write_text("s3cret-control\n")
        self.config = ServingConfig(
            allow_reload=True,
            control_token_file=str(root / "control.token"),
            model_repository=str(root / "models"),
            models_config=str(root / "models.config"),
            rest_port=0,
            grpc_port=0,
            poll_interval_s=0.2,
            max_body_bytes=64 * 1024,
            batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=5000),
        )
        self.images = digit_images(6)
        self.digits = digits_cnn(seed=1)
        export_saved_model(
            self.digits,
            "digits",
            config=self.config,
            warmup_examples=self.images,
            labels=["stable"],
        )
        self.regressor = regressor()
        export_saved_model(self.regressor, "reg", config=self.config)
        self.text = text_classifier()
        export_saved_model(self.text, "text", config=self.config)
        entries, path = model_entries(self.config)
        self.server = EmbeddedServer(self.config, entries, path)
        self.server.start()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.server.rest_port}", timeout=30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, path: str, payload: dict) -> httpx.Response:
        return self.http.post(f"/v1/models/{path}:predict", json=payload)

    def wait_for(self, condition, timeout: float = 30.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()
        self.http.close()
        self.server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    environment = Env(tmp_path_factory.mktemp("serving"))
    yield environment
    environment.close()


def expected(model, inputs) -> np.ndarray:  # noqa: ANN001
    return np.asarray(model(inputs, training=False))


# -- REST -----------------------------------------------------------------------------------------
def test_rest_predict_rows_equal_in_process(env: Env) -> None:
    response = env.predict("digits", {"instances": env.images.tolist()})
    assert response.status_code == 200, response.text
    predictions = probabilities_of(response.json()["predictions"])
    np.testing.assert_allclose(predictions, expected(env.digits, env.images), atol=1e-5)
    assert response.json()["predictions"][0]["classes"] == [str(k) for k in range(10)]


def test_rest_predict_columnar_and_named_instances(env: Env) -> None:
    columnar = env.predict("digits", {"inputs": {"image": env.images[:2].tolist()}})
    assert list(columnar.json()) == ["outputs"]
    named = env.predict("digits/labels/stable", {"instances": [{"image": env.images[0].tolist()}]})
    want = expected(env.digits, env.images[:2])
    np.testing.assert_allclose(columnar.json()["outputs"]["probabilities"], want, atol=1e-5)
    np.testing.assert_allclose(probabilities_of(named.json()["predictions"]), want[:1], atol=1e-5)


def test_rest_status_and_metadata(env: Env) -> None:
    status = env.http.get("/v1/models/reg").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = env.http.get("/v1/models/digits/labels/stable/metadata").json()
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert list(default["inputs"]) == ["image"]
    assert sorted(default["outputs"]) == ["classes", "probabilities"]
    assert {"classify", "serving_default"} <= set(signatures)


def test_rest_classify_and_regress(env: Env) -> None:
    image = env.images[0].reshape(-1).tolist()
    classify = env.http.post(
        "/v1/models/digits:classify",
        json={"signature_name": "classify", "examples": [{"image": image}]},
    )
    assert classify.status_code == 200, classify.text
    pairs = classify.json()["result"][0]
    assert [label for label, _ in pairs] == [str(i) for i in range(10)]
    np.testing.assert_allclose(
        [score for _, score in pairs], expected(env.digits, env.images[:1])[0], atol=1e-5
    )
    features = [0.5, -1.0, 2.0, 0.25]
    regress = env.http.post(
        "/v1/models/reg:regress",
        json={"signature_name": "regress", "examples": [{"features": features}]},
    )
    assert regress.status_code == 200, regress.text
    want = expected(env.regressor, np.asarray([features], "float32"))[0, 0]
    assert regress.json()["result"][0] == pytest.approx(float(want), abs=1e-5)


def test_rest_text_model_with_b64_and_plain_strings(env: Env) -> None:
    encoded = base64.b64encode(b"bad film").decode()
    response = env.predict("text", {"instances": ["good movie", {"b64": encoded}]})
    assert response.status_code == 200, response.text
    want = expected(env.text, tf.constant(["good movie", "bad film"]))
    np.testing.assert_allclose(probabilities_of(response.json()["predictions"]), want, atol=1e-5)


# -- gRPC -----------------------------------------------------------------------------------------
def predict_request(name: str, images: np.ndarray, **spec) -> predict_pb2.PredictRequest:  # noqa: ANN003
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    return request


def test_grpc_predict_equals_in_process(env: Env) -> None:
    response = env.predict_stub.Predict(predict_request("digits", env.images), timeout=30)
    outputs = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(outputs, expected(env.digits, env.images), atol=1e-5)
    assert response.model_spec.name == "digits"
    assert response.model_spec.signature_name == "serving_default"


def test_grpc_metadata_status_classify_regress(env: Env) -> None:
    metadata = env.predict_stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "digits"}, metadata_field=["signature_def"]
        )
    )
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    assert "image" in signature_map.signature_def["serving_default"].inputs
    status = env.model_stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "reg"})
    )
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "digits", "classify"
    example = classify.input.example_list.examples.add()
    example.features.feature["image"].float_list.value.extend(env.images[1].reshape(-1))
    result = env.predict_stub.Classify(classify).result.classifications[0]
    np.testing.assert_allclose(
        [c.score for c in result.classes], expected(env.digits, env.images[1:2])[0], atol=1e-5
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "reg", "regress"
    example = regress.input.example_list.examples.add()
    example.features.feature["features"].float_list.value.extend([1.0, 2.0, 3.0, 4.0])
    value = env.predict_stub.Regress(regress).result.regressions[0].value
    want = expected(env.regressor, np.asarray([[1, 2, 3, 4]], "float32"))[0, 0]
    assert value == pytest.approx(float(want), abs=1e-5)


@pytest.mark.parametrize(
    ("request_kwargs", "code"),
    [
        ({"name": "nope"}, grpc.StatusCode.NOT_FOUND),
        ({"name": "digits", "version": 99}, grpc.StatusCode.NOT_FOUND),
        ({"name": "digits", "version_label": "nope"}, grpc.StatusCode.NOT_FOUND),
        ({"name": "../digits"}, grpc.StatusCode.NOT_FOUND),
    ],
)
def test_grpc_unknown_model_version_label(env: Env, request_kwargs: dict, code) -> None:  # noqa: ANN001
    name = request_kwargs.pop("name")
    with pytest.raises(grpc.RpcError) as error:
        env.predict_stub.Predict(predict_request(name, env.images[:1], **request_kwargs))
    assert error.value.code() == code


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((1, 8, 8), "float32"),  # wrong shape
        np.zeros((1, 8, 8, 1), "int32"),  # wrong dtype
        np.full((1, 8, 8, 1), np.nan, "float32"),  # NaN
    ],
)
def test_grpc_bad_tensor_is_invalid_argument(env: Env, images: np.ndarray) -> None:
    with pytest.raises(grpc.RpcError) as error:
        env.predict_stub.Predict(predict_request("digits", images))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- bad REST input -------------------------------------------------------------------------------
IMAGE = np.zeros((8, 8, 1)).tolist()
TOO_BIG = json.dumps({"instances": [np.zeros((8, 8, 1)).tolist()] * 400})
BAD_REQUESTS = [
    ("malformed JSON", "digits:predict", '{"instances": [', 400),
    ("not an object", "digits:predict", "[1, 2]", 400),
    (
        "instances and inputs",
        "digits:predict",
        json.dumps({"instances": [IMAGE], "inputs": [IMAGE]}),
        400,
    ),
    ("neither", "digits:predict", json.dumps({"signature_name": "serving_default"}), 400),
    ("wrong shape", "digits:predict", json.dumps({"instances": [[1.0, 2.0]]}), 400),
    ("wrong dtype", "digits:predict", json.dumps({"instances": [[[["a"]] * 8] * 8]}), 400),
    ("ragged", "digits:predict", json.dumps({"instances": [IMAGE, [[1.0]]]}), 400),
    (
        "NaN",
        "digits:predict",
        '{"instances": [' + json.dumps(IMAGE).replace("0.0", "NaN", 1) + "]}",
        400,
    ),
    ("empty instances", "digits:predict", json.dumps({"instances": []}), 400),
    ("unknown input name", "digits:predict", json.dumps({"inputs": {"pixels": [IMAGE]}}), 400),
    (
        "unknown signature",
        "digits:predict",
        json.dumps({"signature_name": "x", "instances": [IMAGE]}),
        400,
    ),
    ("unknown model", "nope:predict", json.dumps({"instances": [IMAGE]}), 404),
    ("unknown version", "digits/versions/42:predict", json.dumps({"instances": [IMAGE]}), 404),
    ("bad version", "digits/versions/abc:predict", json.dumps({"instances": [IMAGE]}), 400),
    ("unknown label", "digits/labels/nope:predict", json.dumps({"instances": [IMAGE]}), 404),
    (
        "version and label",
        "digits/versions/1/labels/stable:predict",
        json.dumps({"instances": [IMAGE]}),
        400,
    ),
    ("body too large", "digits:predict", TOO_BIG, 413),
    ("path traversal", "..%2F..%2Fetc:predict", json.dumps({"instances": [IMAGE]}), 400),
    (
        "classify on predict signature",
        "digits:classify",
        json.dumps({"examples": [{"image": 1.0}]}),
        400,
    ),
    (
        "classify bad feature type",
        "digits:classify",
        json.dumps({"signature_name": "classify", "examples": [{"image": ["x"]}]}),
        400,
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "status"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_rest_bad_input_is_4xx_with_error(
    env: Env, case: str, path: str, body: str, status: int
) -> None:
    response = env.http.post(f"/v1/models/{path}", content=body)
    assert response.status_code == status, (case, response.text)
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    good = env.predict("digits", {"instances": [IMAGE]})  # still serving
    assert good.status_code == 200


def test_rest_unknown_status_paths(env: Env) -> None:
    assert env.http.get("/v1/models/nope").status_code == 404
    assert env.http.get("/v1/models/digits/versions/7").status_code == 404
    assert env.http.get("/v1/nothing").status_code == 404


# -- batching, monitoring -------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_correct(env: Env) -> None:
    images = digit_images(32, seed=3)
    want = expected(env.digits, images)

    def call(i: int) -> np.ndarray:
        response = env.predict("digits", {"instances": images[i : i + 1].tolist()})
        return probabilities_of(response.json()["predictions"])[0]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, range(32)))
    np.testing.assert_allclose(np.stack(got), want, atol=1e-5)
    metrics = env.http.get("/monitoring/prometheus/metrics").text
    sums = [
        line
        for line in metrics.splitlines()
        if line.startswith("kerasops_serving_batch_size_count")
    ]
    counts = [
        line for line in metrics.splitlines() if line.startswith("kerasops_serving_batch_size_sum")
    ]
    assert sums and counts
    batches = sum(float(line.split()[-1]) for line in sums)
    rows = sum(float(line.split()[-1]) for line in counts)
    assert rows > batches  # at least one call served more than one request
    assert (
        'kerasops_serving_requests_total{api="predict",code="OK",model="digits",protocol="rest"}'
        in metrics
    )
    assert "kerasops_serving_loaded_versions" in metrics


def test_health_and_readiness(env: Env) -> None:
    assert env.http.get("/healthz").status_code == 200
    ready = env.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


# -- versions (these change the repository: keep them last) --------------------------------------
def test_new_version_is_served_without_restart(env: Env) -> None:
    newer = digits_cnn(seed=2)
    export_saved_model(newer, "digits", config=env.config, version=2)
    env.wait_for(
        lambda: (
            env.http.get("/v1/models/digits/versions/2").status_code == 200
            and env.http.get("/v1/models/digits/versions/2").json()["model_version_status"][0][
                "state"
            ]
            == "AVAILABLE"
        )
    )
    # version 1 carries the label "stable": the policy (latest 1) keeps it for the label
    assert env.server.manager.loaded_versions()["digits"] == [1, 2]
    assert env.predict("digits/labels/stable", {"instances": env.images[:1].tolist()}).is_success
    response = env.predict("digits", {"instances": env.images[:2].tolist()})
    np.testing.assert_allclose(
        probabilities_of(response.json()["predictions"]), expected(newer, env.images[:2]), atol=1e-5
    )
    grpc_response = env.predict_stub.Predict(predict_request("digits", env.images[:2]))
    assert grpc_response.model_spec.version.value == 2


def test_broken_version_leaves_the_old_one_serving(env: Env) -> None:
    base = Path(env.config.model_repository) / "digits"
    staging = base / ".broken"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    staging.rename(base / "3")

    def failed() -> bool:
        response = env.http.get("/v1/models/digits/versions/3")
        return (
            response.status_code == 200
            and response.json()["model_version_status"][0]["status"]["error_code"] != "OK"
        )

    env.wait_for(failed)
    status = env.http.get("/v1/models/digits/versions/3").json()["model_version_status"][0]
    assert status["state"] == "END" and "Failed to load" in status["status"]["error_message"]
    response = env.predict("digits", {"instances": env.images[:1].tolist()})
    assert response.status_code == 200
    assert env.server.manager.loaded_versions()["digits"] == [1, 2]
    shutil.rmtree(base / "3")


def test_reload_config_request_replaces_the_model_list(env: Env) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    base_path = Path(env.config.model_repository) / "reg"
    text = f'model_config_list {{ config {{ name: "reg" base_path: "{base_path}" }} }}'
    text_format.Parse(text, config)
    response = env.model_stub.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config),
        metadata=[("authorization", "Bearer s3cret-control")],
    )
    assert response.status.error_code == 0
    assert env.server.manager.model_names() == ["reg"]
    assert env.http.get("/v1/models/digits").status_code == 404
