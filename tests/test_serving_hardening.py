"""The embedded server as an attacker or a careless client meets it: model control locked,
TLS and tokens, slow clients cut off, every bad request a JSON 4xx, MultiInference."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from kerasops.serving.config import BatchingConfig, ServingConfig, TlsConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.repository import ModelEntry, set_labels
from kerasops.serving.server import EmbeddedServer, model_entries
from tests.serving_helpers import digit_images, digits_cnn, regressor

tf = pytest.importorskip("tensorflow")

from google.protobuf import text_format  # noqa: E402
from tensorflow.core.example import example_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

CONTROL = "control-token-for-tests"
INFERENCE = "inference-token-for-tests"
TIMEOUT = 0.5  # header, body and idle timeouts of the test server (seconds)


def _export_multi(repository: Path) -> None:
    """A SavedModel with both a `classify` and a `regress` signature over tf.Examples of one
    float feature `x` (what MultiInference needs: one model, two example signatures)."""
    spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
    examples = tf.TensorSpec([None], tf.string, name="inputs")

    class Multi(tf.Module):
        @tf.function(input_signature=[examples])
        def classify(self, inputs):  # noqa: ANN001, ANN201
            x = tf.io.parse_example(inputs, spec)["x"]  # (B, 1)
            scores = tf.concat([1.0 - tf.sigmoid(x), tf.sigmoid(x)], axis=1)  # (B, 2)
            classes = tf.tile(tf.constant([["no", "yes"]]), [tf.shape(x)[0], 1])
            return {"classes": classes, "scores": scores}

        @tf.function(input_signature=[examples])
        def regress(self, inputs):  # noqa: ANN001, ANN201
            return {"outputs": 2.0 * tf.io.parse_example(inputs, spec)["x"]}

    module = Multi()
    signatures = {"classify": module.classify, "regress": module.regress}
    tf.saved_model.save(module, str(repository / "multi" / "1"), signatures=signatures)


class Server:
    """One embedded server and its clients; `secure` adds TLS with client certificates and an
    inference token, and leaves model control at its default (off)."""

    def __init__(self, root: Path, secure: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "control.token").write_text(CONTROL + "\n")
        (root / "inference.token").write_text(INFERENCE)
        tls = TlsConfig()
        if secure:
            self.certs = make_certificates(root)
            tls = TlsConfig(
                str(self.certs["server.pem"]),
                str(self.certs["server.key"]),
                str(self.certs["ca.pem"]),
            )
        self.config = ServingConfig(
            model_repository=str(root / "models"),
            models_config=str(root / "models.config"),
            rest_port=0,
            grpc_port=0,
            poll_interval_s=0.2,
            max_body_bytes=256 * 1024,
            allow_reload=not secure,
            control_token_file="" if secure else str(root / "control.token"),
            inference_token_file=str(root / "inference.token") if secure else "",
            header_timeout_s=TIMEOUT,
            body_timeout_s=TIMEOUT,
            idle_timeout_s=TIMEOUT,
            max_connections=8,
            max_rows=8,
            tls=tls,
            batching=BatchingConfig(max_batch_size=8, batch_timeout_micros=1000),
        )
        self.images = digit_images(4)
        export_saved_model(digits_cnn(seed=1), "digits", config=self.config, labels=["stable"])
        if not secure:
            export_saved_model(regressor(), "reg", config=self.config)
            _export_multi(root / "models")
            set_labels(self.config, "multi", {})  # into models.config
        entries, path = model_entries(self.config)
        self.server = EmbeddedServer(self.config, entries, path)
        self.server.start()
        self.rest = ("127.0.0.1", self.server.rest_port)
        if secure:
            self.channel = grpc.secure_channel(
                f"localhost:{self.server.grpc_port}", self.grpc_credentials(with_cert=True)
            )
            self.http = None
        else:
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")
            self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.rest[1]}", timeout=10)
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def grpc_credentials(self, with_cert: bool) -> grpc.ChannelCredentials:
        ca = self.certs["ca.pem"].read_bytes()
        if not with_cert:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        key, cert = self.certs["client.key"].read_bytes(), self.certs["client.pem"].read_bytes()
        return grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)

    def close(self) -> None:
        self.channel.close()
        if self.http is not None:
            self.http.close()
        self.server.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = Server(tmp_path_factory.mktemp("plain"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = Server(tmp_path_factory.mktemp("secure"), secure=True)
    yield server
    server.close()


# -- certificates made here, with the `cryptography` package ---------------------------------
def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(name, key, issuer_name, issuer_key, ca=False, sans=(), usage=None):  # noqa: ANN001, ANN202
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, cert, key) -> None:  # noqa: ANN001
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kerasops test CA")])
    ca = certificate("kerasops test CA", ca_key, ca_name, ca_key, ca=True)
    write("ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = certificate(
        "localhost", server_key, ca_name, ca_key, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    write("server", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = certificate(
        "client", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    write("client", client, client_key)
    return {p.name: p for p in folder.iterdir() if p.suffix in (".pem", ".key")}


# -- helpers ------------------------------------------------------------------------------------
def reload_request(*models: tuple[str, str]) -> model_management_pb2.ReloadConfigRequest:
    config = model_server_config_pb2.ModelServerConfig()
    text = " ".join(f'config {{ name: "{n}" base_path: "{p}" }}' for n, p in models)
    text_format.Parse(f"model_config_list {{ {text} }}", config)
    return model_management_pb2.ReloadConfigRequest(config=config)


def predict_request(images: np.ndarray, name: str = "digits") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    return request


def raw_exchange(
    address: tuple[str, int], data: bytes = b"", wait: float = 3.0
) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes; return (bytes read, seconds to close)."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=wait) as sock:
        if data:
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, float("inf")  # still open after `wait`
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return received, time.monotonic() - started
            received += chunk


def json_error(raw: bytes, status: int) -> str:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), raw
    assert b"content-type: application/json" in head.lower(), raw
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message
    return message


IMAGE = digit_images(1)[0].tolist()


# -- 1. model control and transport security ---------------------------------------------------
def test_reload_is_off_by_default(secure: Server) -> None:
    assert ServingConfig().allow_reload is False
    base = Path(secure.config.model_repository) / "digits"
    with pytest.raises(grpc.RpcError) as caught:
        secure.model_stub.HandleReloadConfigRequest(
            reload_request(("digits", str(base))),
            metadata=[("authorization", f"Bearer {INFERENCE}")],
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert secure.server.manager.model_names() == ["digits"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", CONTROL, "Basic abc"])
def test_reload_needs_the_control_token(plain: Server, authorization: str | None) -> None:
    base = Path(plain.config.model_repository) / "reg"
    metadata = [("authorization", authorization)] if authorization else None
    with pytest.raises(grpc.RpcError) as caught:
        plain.model_stub.HandleReloadConfigRequest(
            reload_request(("reg", str(base))), metadata=metadata
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert plain.server.manager.model_names() == ["digits", "multi", "reg"]


def test_reload_base_path_must_lie_in_the_repository(plain: Server, tmp_path: Path) -> None:
    repository = Path(plain.config.model_repository)
    outside = tmp_path / "elsewhere"
    reg_base = repository / "reg"
    (repository / "escape").symlink_to(outside, target_is_directory=True)
    outside.mkdir()
    token = [("authorization", f"Bearer {CONTROL}")]
    for base in (str(outside), f"{repository}/../{tmp_path.name}", str(repository / "escape")):
        with pytest.raises(grpc.RpcError) as caught:
            plain.model_stub.HandleReloadConfigRequest(
                reload_request(("reg", str(reg_base)), ("evil", base)), metadata=token
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, base
        assert "outside the model repositories" in caught.value.details()
    assert plain.server.manager.model_names() == ["digits", "multi", "reg"]
    (repository / "escape").unlink()


def test_tls_rest_with_client_certificate_and_inference_token(secure: Server) -> None:
    url = f"https://localhost:{secure.rest[1]}/v1/models/digits:predict"
    certs = secure.certs
    with_cert = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    with_cert.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
    body = {"instances": [IMAGE]}
    with httpx.Client(verify=with_cert, timeout=10) as client:
        ok = client.post(url, json=body, headers={"Authorization": f"Bearer {INFERENCE}"})
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["predictions"]) == 1
        for headers in ({}, {"Authorization": "Bearer nope"}):
            refused = client.post(url, json=body, headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]
    without_cert = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    with httpx.Client(verify=without_cert, timeout=10) as anonymous, pytest.raises(httpx.HTTPError):
        anonymous.post(url, json=body, headers={"Authorization": f"Bearer {INFERENCE}"})
    with pytest.raises(httpx.HTTPError):  # plaintext HTTP on the TLS port
        httpx.post(f"http://127.0.0.1:{secure.rest[1]}/v1/models/digits:predict", json=body)


def test_tls_grpc_with_client_certificate_and_inference_token(secure: Server) -> None:
    images = digit_images(2)
    token = [("authorization", f"Bearer {INFERENCE}")]
    response = secure.predict_stub.Predict(predict_request(images), metadata=token, timeout=10)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (2, 10)
    with pytest.raises(grpc.RpcError) as caught:
        secure.predict_stub.Predict(predict_request(images), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    address = f"localhost:{secure.server.grpc_port}"
    with grpc.secure_channel(address, secure.grpc_credentials(with_cert=False)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(images), metadata=token, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# -- 2. slow clients and limits -----------------------------------------------------------------
PREDICT_HEAD = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("sends nothing", b""),
        ("partial headers", PREDICT_HEAD + b"Content-Type: appl"),
        ("headers then a stalled body", PREDICT_HEAD + b'Content-Length: 40\r\n\r\n{"ins'),
        ("Content-Length beyond the body", PREDICT_HEAD + b"Content-Length: 9999\r\n\r\n{}"),
    ],
)
def test_slow_clients_are_cut_off(plain: Server, case: str, data: bytes) -> None:
    received, closed_after = raw_exchange(plain.rest, data)
    assert closed_after < TIMEOUT + 1.5, (case, closed_after)
    if received:
        assert "not received within" in json_error(received, 408)


def test_idle_keep_alive_connection_is_closed(plain: Server) -> None:
    body = json.dumps({"instances": [IMAGE]}).encode()
    request = PREDICT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    received, closed_after = raw_exchange(plain.rest, request)
    assert received.startswith(b"HTTP/1.1 200") and closed_after < TIMEOUT + 1.5


def test_connections_beyond_the_cap_are_refused(plain: Server) -> None:
    sockets = [socket.create_connection(plain.rest) for _ in range(plain.config.max_connections)]
    try:
        received, closed_after = raw_exchange(plain.rest, wait=TIMEOUT)
        assert "too many connections" in json_error(received, 503)
    finally:
        for sock in sockets:
            sock.close()


def test_more_rows_than_max_rows_is_invalid(plain: Server) -> None:
    rows = plain.config.max_rows + 1
    response = plain.http.post(
        "/v1/models/digits:predict", json={"instances": digit_images(rows).tolist()}
    )
    assert response.status_code == 400 and "at most 8" in response.json()["error"]
    classify = plain.http.post(
        "/v1/models/multi:classify",
        json={"signature_name": "classify", "examples": [{"x": 1.0}] * rows},
    )
    assert classify.status_code == 400 and "at most 8" in classify.json()["error"]
    with pytest.raises(grpc.RpcError) as caught:
        plain.predict_stub.Predict(predict_request(digit_images(rows)), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- 3. every bad request a JSON 4xx ------------------------------------------------------------
def _deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


@pytest.mark.parametrize(
    ("case", "path", "body"),
    [
        ("5000 deep instances", "digits:predict", '{"instances": ' + _deep(5000) + "}"),
        ("5000 deep example", "multi:classify", '{"examples": [{"x": ' + _deep(5000) + "}]}"),
        ("200 deep instances", "digits:predict", '{"instances": ' + _deep(200) + "}"),
        ("5000 deep with NaN", "digits:predict", '{"a": NaN, "instances": ' + _deep(5000) + "}"),
    ],
)
def test_deep_json_is_400(plain: Server, case: str, path: str, body: str) -> None:
    response = plain.http.post(f"/v1/models/{path}", content=body)
    assert response.status_code == 400, (case, response.text)
    assert "nested deeper" in response.json()["error"] or "Parse error" in response.json()["error"]


def test_booleans_and_strings_are_refused_for_float_inputs(plain: Server) -> None:
    with_bool = json.loads(json.dumps(IMAGE))
    with_bool[0][0][0] = True
    with_string = json.loads(json.dumps(IMAGE))
    with_string[3][3][0] = "7"
    for instance, word in ((with_bool, "boolean"), (with_string, "strings")):
        for body in ({"instances": [instance]}, {"inputs": {"image": [instance]}}):
            response = plain.http.post("/v1/models/digits:predict", json=body)
            assert response.status_code == 400, response.text
            assert word in response.json()["error"]
    response = plain.http.post("/v1/models/reg:predict", json={"instances": [[1.0, True, 2, 3]]})
    assert response.status_code == 400 and "boolean" in response.json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data", "image/png"])
def test_non_json_content_type_is_415(plain: Server, content_type: str) -> None:
    body = json.dumps({"instances": [IMAGE]})
    response = plain.http.post(
        "/v1/models/digits:predict", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    # curl -d sends application/x-www-form-urlencoded: TF Serving's own examples rely on it
    for good in (
        "application/json; charset=utf-8",
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
    ):
        ok = plain.http.post(
            "/v1/models/digits:predict", content=body, headers={"Content-Type": good}
        )
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("garbage request line", b"\x16\x03\x01 hello there\r\n\r\n"),
        ("negative Content-Length", PREDICT_HEAD + b"Content-Length: -5\r\n\r\n"),
        (
            "bad chunked encoding",
            PREDICT_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
    ],
)
def test_http_layer_errors_are_json(plain: Server, case: str, data: bytes) -> None:
    received, _ = raw_exchange(plain.rest, data)
    assert "malformed HTTP request" in json_error(received, 400), case


def test_tensorflow_errors_name_the_input_and_what_arrived(plain: Server) -> None:
    response = plain.http.post(
        "/v1/models/digits:classify",
        json={"signature_name": "classify", "examples": [{"image": ["x"] * 64}]},
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert "Graph execution error" not in message
    assert "image" in message and "float" in message and "string" in message, message


# -- 4. label integrity, startup warning, --models-config with --model-repository -------------
def test_serve_warns_once_naming_the_path_of_a_model_with_no_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServingConfig(rest_port=0, grpc_port=0, model_repository=str(tmp_path))
    server = EmbeddedServer(config, [ModelEntry("ghost", tmp_path / "ghost")])
    with caplog.at_level("WARNING", logger="kerasops.serving.server"):
        server.start()
        server.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "ghost" in warnings[0] and str(tmp_path / "ghost") in warnings[0]


def test_models_config_with_model_repository_maps_base_paths_there(tmp_path: Path) -> None:
    from kerasops.serving.repository import update_models_config

    config = ServingConfig(model_repository=str(tmp_path / "params-repo"))
    other = tmp_path / "other-repo"
    models_config = tmp_path / "x.config"
    exported = ServingConfig(model_repository=str(other), models_config=str(models_config))
    from kerasops.serving.repository import mapping_for

    update_models_config(
        models_config, "cnn", other / "cnn", exported.version_policy, {}, mapping_for(exported)
    )
    assert "/serving/models/cnn" in models_config.read_text()
    entries, _ = model_entries(config, str(models_config), str(other))
    assert [e.base_path for e in entries] == [other.resolve() / "cnn"]


def test_serve_accepts_models_config_and_model_repository_together() -> None:
    from kerasops.pipelines.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--models-config", "x.config", "--model-repository", "repo"]
    )
    assert (args.models_config, args.model_repository) == ("x.config", "repo")


# -- 5. MultiInference --------------------------------------------------------------------------
def test_multi_inference_classify_and_regress_in_one_call(plain: Server) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify", "classify"), ("regress", "regress")):
        task = request.tasks.add()
        task.model_spec.name = "multi"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    for value in (0.0, 1.5):
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(value)
        request.input.example_list.examples.append(example)
    response = plain.predict_stub.MultiInference(request, timeout=10)
    classification, regression = response.results
    assert classification.model_spec.signature_name == "classify"
    first = classification.classification_result.classifications[0].classes
    assert [c.label for c in first] == ["no", "yes"]
    assert first[1].score == pytest.approx(0.5)
    values = [r.value for r in regression.regression_result.regressions]
    assert values == pytest.approx([0.0, 3.0])
    assert regression.model_spec.version.value == 1


def test_multi_inference_rejects_mixed_models_and_unknown_methods(plain: Server) -> None:
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add(method_name="tensorflow/serving/classify").model_spec.name = "multi"
    request.tasks.add(method_name="tensorflow/serving/regress").model_spec.name = "reg"
    request.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as caught:
        plain.predict_stub.MultiInference(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    del request.tasks[1]
    request.tasks[0].method_name = "tensorflow/serving/predict"
    with pytest.raises(grpc.RpcError) as caught:
        plain.predict_stub.MultiInference(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("use_grpc", [False, True])
def test_kerasops_predict_reaches_a_guarded_server(
    secure: Server, tmp_path: Path, capsys, use_grpc: bool
) -> None:  # noqa: ANN001, E501
    from kerasops.pipelines import cli

    np.save(tmp_path / "images.npy", secure.images[:2])
    port = secure.server.grpc_port if use_grpc else secure.rest[1]
    url = f"localhost:{port}" if use_grpc else f"https://localhost:{port}"
    certs = secure.certs
    argv = ["predict", "digits", "--input", str(tmp_path / "images.npy"), "--url", url]
    argv += ["--ca-file", str(certs["ca.pem"]), "--cert-file", str(certs["client.pem"])]
    argv += ["--key-file", str(certs["client.key"])] + (["--grpc"] if use_grpc else [])
    token = tmp_path / "token"
    token.write_text(INFERENCE + "\n")
    assert cli.main([*argv, "--token-file", str(token)]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(answers) == 2 and all(len(a["probabilities"]) == 5 for a in answers)
    assert cli.main(argv) == 2  # no token: refused, one line
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1, error
