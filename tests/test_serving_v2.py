"""The Open Inference Protocol (v2) beside TF Serving's API, on the same ports and models:
checked with Triton's own clients (tritonclient.http, tritonclient.grpc), raw HTTP and the
protocol's gRPC messages; every v2 answer equals v1 Predict's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import struct
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from kerasops.serving.config import BatchingConfig, ServingConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.server import EmbeddedServer, model_entries
from tests.serving_helpers import digit_images, digits_cnn, regressor, text_classifier

tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

CONTROL = {"authorization": "Bearer s3cret-control"}
TEXTS = ["good movie", "bad film", "great plot twist"]
TEXT_TENSOR = {"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}


class Env:
    """A running server with a classifier (label `stable`), a text model and a regressor."""

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
        self.images = digit_images(4)
        export_saved_model(digits_cnn(seed=1), "digits", config=self.config, labels=["stable"])
        export_saved_model(text_classifier(), "text", config=self.config)
        export_saved_model(regressor(), "reg", config=self.config)
        entries, path = model_entries(self.config)
        self.server = EmbeddedServer(self.config, entries, path)
        self.server.start()
        self.rest = f"127.0.0.1:{self.server.rest_port}"
        self.http = httpx.Client(base_url=f"http://{self.rest}", timeout=30)
        self.triton = tritonhttp.InferenceServerClient(self.rest)
        self.triton_grpc = tritongrpc.InferenceServerClient(f"127.0.0.1:{self.server.grpc_port}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def v1(self, name: str, inputs: dict) -> dict[str, np.ndarray]:
        response = self.http.post(f"/v1/models/{name}:predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        if not isinstance(outputs, dict):  # one output: v1 answers its value alone
            outputs = {self.http.get(f"/v2/models/{name}").json()["outputs"][0]["name"]: outputs}
        outputs = {k: np.asarray(v) for k, v in outputs.items()}
        return {k: v.astype("float32") if v.dtype.kind == "f" else v for k, v in outputs.items()}

    def close(self) -> None:
        self.triton.close()
        self.triton_grpc.close()
        self.channel.close()
        self.http.close()
        self.server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    environment = Env(tmp_path_factory.mktemp("serving-v2"))
    yield environment
    environment.close()


def image_tensor(images: np.ndarray) -> dict:
    return {"name": "image", "datatype": "FP32", "shape": list(images.shape),
            "data": images.reshape(-1).tolist()}  # fmt: skip


# -- REST, raw HTTP -------------------------------------------------------------------------------
def test_rest_server_and_model_metadata(env: Env) -> None:
    server = env.http.get("/v2").json()
    assert server["name"] == "kerasops" and "binary_tensor_data" in server["extensions"]
    assert env.http.get("/v2/health/live").status_code == 200
    assert env.http.get("/v2/health/ready").status_code == 200
    metadata = env.http.get("/v2/models/digits").json()
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in metadata["outputs"]
    assert metadata["versions"] == ["1"] and metadata["platform"] == "tensorflow_savedmodel"
    text = env.http.get("/v2/models/text/versions/1").json()
    assert text["inputs"][0]["datatype"] == "BYTES"
    assert env.http.get("/v2/models/digits/versions/stable/ready").status_code == 200
    assert env.http.get("/v2/models/digits/versions/9/ready").status_code == 404
    assert env.http.get("/v2/models/nope/ready").status_code == 404


def test_rest_json_infer_equals_v1_predict(env: Env) -> None:
    body = {
        "id": "r1",
        "inputs": [image_tensor(env.images)],
        "outputs": [{"name": "probabilities"}],
    }
    response = env.http.post("/v2/models/digits/versions/stable/infer", json=body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("digits", "1", "r1")
    [output] = body["outputs"]
    assert output["shape"] == [4, 10] and output["datatype"] == "FP32"
    want = env.v1("digits", {"image": env.images.tolist()})["probabilities"]
    np.testing.assert_array_equal(np.asarray(output["data"], "float32").reshape(4, 10), want)

    text = env.http.post(
        "/v2/models/text/infer",
        json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]},
    ).json()
    outputs = {o["name"]: o for o in text["outputs"]}
    assert outputs["classes"]["datatype"] == "BYTES" and outputs["classes"]["data"][:3] == [
        "0", "1", "2"]  # fmt: skip
    want = env.v1("text", {"text": TEXTS})["probabilities"]
    got = np.asarray(outputs["probabilities"]["data"], "float32").reshape(3, 3)
    np.testing.assert_array_equal(got, want)


def test_rest_binary_tensor_data_in_and_out(env: Env) -> None:
    header = json.dumps({
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [4, 8, 8, 1],
                    "parameters": {"binary_data_size": env.images.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    response = env.http.post(
        "/v2/models/digits/infer",
        content=header + env.images.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 4 * 10 * 4}
    got = np.frombuffer(response.content[length:], "<f4").reshape(4, 10)
    np.testing.assert_array_equal(
        got, env.v1("digits", {"image": env.images.tolist()})["probabilities"]
    )


IMAGE = np.zeros((1, 8, 8, 1), "float32")
GOOD = {"inputs": [image_tensor(IMAGE)]}


def image(**changes) -> dict:  # noqa: ANN003
    """A one-image request with the tensor's fields changed."""
    return {"inputs": [{**image_tensor(IMAGE), **changes}]}


NAN = b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1,1,1,1], "data": [NaN]}]}'
BAD_JSON = [
    ("malformed JSON", "digits", b'{"inputs": [', 400),
    ("not an object", "digits", b"[1, 2]", 400),
    ("no inputs", "digits", {"inputs": []}, 400),
    ("wrong shape", "digits", image(shape=[1, 8, 8]), 400),
    ("shape and data disagree", "digits", image(shape=[2, 8, 8, 1]), 400),
    ("wrong datatype", "digits", image(datatype="INT32"), 400),
    ("unknown datatype", "digits", image(datatype="FP8"), 400),
    ("strings for FP32", "digits", image(data=["a"] * 64), 400),
    ("boolean for a number", "digits", image(data=[True] + [0.0] * 63), 400),
    ("NaN", "digits", NAN, 400),
    ("unknown input", "digits", image(name="pixels"), 400),
    ("no data", "digits", {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1]}]}, 400),
    ("unknown output", "digits", {**GOOD, "outputs": [{"name": "logits"}]}, 400),
    ("BYTES count", "text", {"inputs": [{**TEXT_TENSOR, "shape": [2], "data": ["a"]}]}, 400),
    ("unknown signature", "digits", {**GOOD, "parameters": {"signature_name": "x"}}, 400),
    ("huge BYTES shape", "text", {"inputs": [{**TEXT_TENSOR, "shape": [10**12]}]}, 400),
    ("huge shape", "digits", image(shape=[10**12, 8, 8, 1]), 400),
    ("unknown model", "nope", GOOD, 404),
    ("unknown version", "digits/versions/42", GOOD, 404),
    ("unknown label", "digits/versions/canary", GOOD, 404),
    ("bad model name", "..digits", GOOD, 400),
    ("path traversal", "..%2Fdigits", GOOD, 404),
    ("oversized", "digits", {"inputs": [image_tensor(np.zeros((300, 8, 8, 1), "float32"))]}, 413),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "model", "body", "status"), BAD_JSON, ids=[c[0] for c in BAD_JSON]
)
def test_rest_bad_json_is_4xx_and_the_server_stays_up(
    env: Env, case: str, model: str, body: object, status: int
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = env.http.post(f"/v2/models/{model}/infer", content=content)
    assert response.status_code == status, (case, response.text)
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert env.http.post("/v2/models/digits/infer", json=GOOD).status_code == 200


def binary_request(declared_header: int | str | None, sizes: list[int], blob: bytes) -> tuple:
    tensors = [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1],
                "parameters": {"binary_data_size": size}} for size in sizes]  # fmt: skip
    header = json.dumps({"inputs": tensors}).encode()
    length = len(header) if declared_header is None else declared_header
    return header + blob, {"Inference-Header-Content-Length": str(length)}


BAD_BINARY = [
    ("header length past the body", 10**6, [256], IMAGE.tobytes()),
    ("header length not a number", "x", [256], IMAGE.tobytes()),
    ("binary_data_size past the data", None, [512], IMAGE.tobytes()),
    ("bytes left over", None, [256], IMAGE.tobytes() + b"\0" * 8),
    ("size not a whole tensor", None, [252], IMAGE.tobytes()[:252]),
    ("negative size", None, [-4], IMAGE.tobytes()),
]


@pytest.mark.parametrize(
    ("case", "declared", "sizes", "blob"), BAD_BINARY, ids=[c[0] for c in BAD_BINARY]
)
def test_rest_inconsistent_binary_lengths_are_400(
    env: Env, case: str, declared: object, sizes: list[int], blob: bytes
) -> None:
    content, headers = binary_request(declared, sizes, blob)
    response = env.http.post("/v2/models/digits/infer", content=content, headers=headers)
    assert response.status_code == 400, (case, response.text)
    assert response.json()["error"]
    good, headers = binary_request(None, [256], IMAGE.tobytes())
    assert env.http.post("/v2/models/digits/infer", content=good, headers=headers).is_success


def test_rest_compressed_body_is_refused_and_huge_bytes_shape_is_400(env: Env) -> None:
    gzipped = env.http.post(
        "/v2/models/digits/infer", content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"}
    )
    assert gzipped.status_code == 415 and "Content-Encoding" in gzipped.json()["error"]
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [10**12],
                                     "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
    response = env.http.post(
        "/v2/models/text/infer",
        content=header + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400, response.text


def test_rest_bytes_binary_input_with_length_prefixes(env: Env) -> None:
    blob = b"".join(struct.pack("<I", len(t)) + t.encode() for t in TEXTS)
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "probabilities"}]}).encode()  # fmt: skip
    response = env.http.post(
        "/v2/models/text/infer",
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["outputs"][0]["data"], "float32").reshape(3, 3)
    np.testing.assert_array_equal(got, env.v1("text", {"text": TEXTS})["probabilities"])
    truncated = header + blob[:-2]
    headers = {"Inference-Header-Content-Length": str(len(header))}
    assert (
        env.http.post("/v2/models/text/infer", content=truncated, headers=headers).status_code
        == 400
    )


# -- tritonclient (Triton's own clients) ---------------------------------------------------------
def test_tritonclient_http_health_metadata_and_infer(env: Env) -> None:
    client = env.triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and not client.is_model_ready("nope")
    assert client.get_server_metadata()["name"] == "kerasops"
    metadata = client.get_model_metadata("digits", model_version="1")
    assert metadata["inputs"][0]["shape"] == [-1, 8, 8, 1]
    want = env.v1("digits", {"image": env.images.tolist()})["probabilities"]
    for binary in (False, True):
        tensor = tritonhttp.InferInput("image", list(env.images.shape), "FP32")
        tensor.set_data_from_numpy(env.images, binary_data=binary)
        requested = [tritonhttp.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer("digits", [tensor], outputs=requested)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), want)
    tensor = tritonhttp.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(np.asarray([t.encode() for t in TEXTS], dtype=object))
    result = client.infer("text", [tensor])  # no outputs named: all of them, binary
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), env.v1("text", {"text": TEXTS})["probabilities"]
    )
    assert result.as_numpy("classes")[0].tolist() == [b"0", b"1", b"2"]
    with pytest.raises(InferenceServerException, match="shape"):
        bad = tritonhttp.InferInput("image", [1, 8, 8], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 8, 8), "float32"))
        client.infer("digits", [bad])


def test_tritonclient_grpc_health_metadata_and_raw_infer(env: Env) -> None:
    client = env.triton_grpc
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits", "stable") and not client.is_model_ready("nope")
    assert "model_repository" in client.get_server_metadata().extensions
    metadata = client.get_model_metadata("text")
    assert (metadata.inputs[0].name, metadata.inputs[0].datatype) == ("text", "BYTES")
    tensor = tritongrpc.InferInput("image", list(env.images.shape), "FP32")
    tensor.set_data_from_numpy(env.images)  # raw_input_contents
    result = client.infer("digits", [tensor], model_version="stable", request_id="g1")
    assert result.get_response().id == "g1" and result.get_response().model_version == "1"
    want = env.v1("digits", {"image": env.images.tolist()})["probabilities"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), want)
    tensor = tritongrpc.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(np.asarray([t.encode() for t in TEXTS], dtype=object))
    result = client.infer(
        "text", [tensor], outputs=[tritongrpc.InferRequestedOutput("probabilities")]
    )
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), env.v1("text", {"text": TEXTS})["probabilities"]
    )


# -- gRPC, the protocol's messages ----------------------------------------------------------------
def test_grpc_typed_contents_equal_v1(env: Env) -> None:
    features = np.asarray([[0.5, -1.0, 2.0, 0.25]], "float32")
    request = service_pb2.ModelInferRequest(model_name="reg")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(features.reshape(-1))
    response = env.stub.ModelInfer(request, timeout=30)
    assert response.outputs[0].name == "forecast" and list(response.outputs[0].shape) == [1, 1]
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(1, 1)
    np.testing.assert_array_equal(got, env.v1("reg", {"features": features.tolist()})["forecast"])


def grpc_request(**changes) -> service_pb2.ModelInferRequest:  # noqa: ANN003
    request = service_pb2.ModelInferRequest(model_name=changes.pop("model", "digits"))
    request.inputs.add(
        name="image",
        datatype=changes.pop("datatype", "FP32"),
        shape=changes.pop("shape", [1, 8, 8, 1]),
    )
    request.raw_input_contents.extend(changes.pop("raw", [IMAGE.tobytes()]))
    if changes.pop("version", None):
        request.model_version = "7"
    return request  # fmt: skip


@pytest.mark.parametrize(
    ("request_kwargs", "code"),
    [
        ({"model": "nope"}, grpc.StatusCode.NOT_FOUND),
        ({"version": True}, grpc.StatusCode.NOT_FOUND),
        ({"datatype": "INT32"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"shape": [1, 8, 8]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"raw": [IMAGE.tobytes()[:-4]]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"raw": [IMAGE.tobytes()] * 2}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown model", "unknown version", "datatype", "shape", "short raw", "raw count"],
)
def test_grpc_bad_requests_get_status_codes(env: Env, request_kwargs: dict, code) -> None:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as error:
        env.stub.ModelInfer(grpc_request(**request_kwargs), timeout=30)
    assert error.value.code() == code and error.value.details()
    assert env.stub.ModelInfer(grpc_request(), timeout=30).outputs


def test_grpc_unimplemented_triton_extension(env: Env) -> None:
    with pytest.raises(grpc.RpcError) as error:
        env.stub.ModelConfig(service_pb2.ModelConfigRequest(name="digits"), timeout=30)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- one engine: batching and metrics ------------------------------------------------------------
def test_v1_and_v2_requests_mixed_answer_alike_and_count_per_protocol(env: Env) -> None:
    images = digit_images(24, seed=5)
    want = env.v1("digits", {"image": images.tolist()})["probabilities"]

    def call(i: int) -> np.ndarray:
        if i % 3 == 0:
            return env.v1("digits", {"image": images[i : i + 1].tolist()})["probabilities"][0]
        if i % 3 == 1:
            body = {"inputs": [image_tensor(images[i : i + 1])]}
            outputs = env.http.post("/v2/models/digits/infer", json=body).json()["outputs"]
            data = next(o for o in outputs if o["name"] == "probabilities")["data"]
            return np.asarray(data, "float32")
        tensor = tritongrpc.InferInput("image", [1, 8, 8, 1], "FP32")
        tensor.set_data_from_numpy(images[i : i + 1])
        return env.triton_grpc.infer("digits", [tensor]).as_numpy("probabilities")[0]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        got = np.stack(list(pool.map(call, range(24))))
    np.testing.assert_allclose(got, want, atol=1e-6)  # batched with other rows: same answers
    metrics = env.http.get("/metrics").text
    for protocol in ("rest", "rest_v2", "grpc_v2"):
        assert f'model="digits",protocol="{protocol}"' in metrics, protocol


# -- model repository extension (keep last: it changes the model list) ----------------------------
def test_repository_extension_needs_the_control_token(env: Env) -> None:
    assert env.http.post("/v2/repository/index").status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert env.http.post("/v2/repository/models/reg/unload", headers=wrong).status_code == 401
    with pytest.raises(grpc.RpcError) as error:
        env.stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=30)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_repository_index_unload_and_load(env: Env) -> None:
    index = env.http.post("/v2/repository/index", headers=CONTROL, json={"ready": True}).json()
    assert {(row["name"], row["state"]) for row in index} >= {("reg", "READY"), ("digits", "READY")}
    env.triton.unload_model("reg", headers=CONTROL)  # sends parameters.unload_dependents
    assert env.http.get("/v2/models/reg/ready").status_code == 404
    assert env.http.get("/v1/models/reg").status_code == 404  # the same model list as v1
    index = env.stub.RepositoryIndex(
        service_pb2.RepositoryIndexRequest(), metadata=list(CONTROL.items())
    )
    assert ("reg", "UNAVAILABLE") in {(m.name, m.state) for m in index.models}
    assert env.http.post("/v2/repository/models/../load", headers=CONTROL).status_code in (400, 404)
    assert env.http.post("/v2/repository/models/nope/load", headers=CONTROL).status_code == 404
    with pytest.raises(InferenceServerException, match="config"):
        env.triton.load_model("reg", headers=CONTROL, config='{"backend": "onnx"}')
    env.triton_grpc.load_model("reg", headers=CONTROL)
    assert ("reg", "1", "READY") in {
        (m["name"], m.get("version"), m["state"])
        for m in env.triton.get_model_repository_index(headers=CONTROL)
    }
    assert env.http.get("/v2/models/reg/ready").status_code == 200
    assert env.http.post("/v1/models/reg:predict", json={"instances": [[0.0] * 4]}).is_success


def asgi_call(app, method: str, path: str, headers: list | None = None) -> tuple[int, bytes]:  # noqa: ANN001
    """(status, body) of one request to an ASGI app, without a server."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def oip_app(config: ServingConfig):  # noqa: ANN201
    from kerasops.serving.manager import ModelManager
    from kerasops.serving.metrics import ServingMetrics
    from kerasops.serving.rest_v2 import OipRest

    return OipRest(ModelManager([], config), ServingMetrics(), config)


def test_repository_extension_is_off_without_allow_reload(tmp_path: Path) -> None:
    app = oip_app(ServingConfig(model_repository=str(tmp_path)))
    auth = [(b"authorization", b"Bearer anything")]
    status, body = asgi_call(app, "POST", "/v2/repository/index", auth)
    assert status == 403 and b"allow_reload" in body


def test_inference_token_guards_v2_but_not_its_probes(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("inference-secret\n")
    config = ServingConfig(
        model_repository=str(tmp_path), inference_token_file=str(tmp_path / "token")
    )
    app = oip_app(config)
    assert asgi_call(app, "GET", "/v2/health/live")[0] == 200
    assert asgi_call(app, "GET", "/v2/models/digits")[0] == 401
    assert asgi_call(app, "GET", "/v2")[0] == 401
    good = [(b"authorization", b"Bearer inference-secret")]
    assert asgi_call(app, "GET", "/v2/models/digits", good)[0] == 404  # past the guard
