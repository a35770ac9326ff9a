"""Clients for TF Serving's REST and gRPC APIs: the same calls work against the embedded server
and a TensorFlow Serving container.

    from kerasops.serving.client import connect
    client = connect("http://127.0.0.1:8501")          # or connect("127.0.0.1:8500", grpc=True)
    outputs = client.predict("cnn-digits", images)      # {"probabilities": array (B, 10)}
"""

from __future__ import annotations

import base64
import dataclasses
import ssl
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

from kerasops.errors import KerasopsError

DEFAULT_REST_URL = "http://127.0.0.1:8501"
DEFAULT_GRPC_TARGET = "127.0.0.1:8500"


class ServingClientError(KerasopsError):
    """The server refused a request; `code` is the TF Serving status or HTTP code."""

    def __init__(self, message: str, code: str | int = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Which model, version or label, and signature a call is for."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ServingClientError("give a version or a label, not both", "INVALID_ARGUMENT")

    def path(self) -> str:
        if self.version is not None:
            return f"/v1/models/{self.name}/versions/{self.version}"
        if self.label is not None:
            return f"/v1/models/{self.name}/labels/{self.label}"
        return f"/v1/models/{self.name}"


Inputs = np.ndarray | dict[str, Any] | list


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a guarded server asks of a client: a bearer token (`serving.inference_token_*`)
    and, for TLS, the CA that signed the server's certificate (`ca_file`) plus the client's
    own certificate and key for mutual TLS."""

    token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


NO_CREDENTIALS = Credentials()


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A signature's single input as its metadata states it."""

    name: str
    dtype: str  # TF Serving's enum name, e.g. "DT_FLOAT", "DT_STRING"
    shape: tuple[int | None, ...]  # batch axis first; None where any size goes


class RestClient:
    """TF Serving REST API client (columnar `inputs` format in, numpy arrays out)."""

    def __init__(
        self,
        url: str = DEFAULT_REST_URL,
        timeout: float = 30.0,
        credentials: Credentials = NO_CREDENTIALS,
    ) -> None:
        cert = (credentials.cert_file, credentials.key_file) if credentials.cert_file else None
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            headers=credentials.headers(),
            verify=_ssl_context(credentials.ca_file, cert) if credentials.ca_file else True,
        )
        self._signatures: dict[ModelRef, dict] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, payload: dict | None = None) -> Any:

        try:
            response = self._http.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise ServingClientError(f"cannot reach {self._http.base_url}: {exc}") from None
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"error": response.text}
        if response.status_code != 200:
            raise ServingClientError(body.get("error", response.text), response.status_code)
        return body

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", ModelRef(model, version, label).path())

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", ModelRef(model, version, label).path() + "/metadata")

    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict; `inputs` is one batch array (single-input models) or {name: batch}."""
        ref = ModelRef(model, version, label, signature_name)
        named = inputs if isinstance(inputs, dict) else {self._single_input(ref): inputs}
        payload: dict[str, Any] = {"inputs": {k: _to_json(v) for k, v in named.items()}}
        if signature_name:
            payload["signature_name"] = signature_name
        outputs = self._call("POST", ref.path() + ":predict", payload)["outputs"]
        if not isinstance(outputs, dict):
            outputs = {self._single_output(ref): outputs}
        return {key: np.asarray(value) for key, value in outputs.items()}

    def classify(
        self,
        model: str,
        examples: list[dict[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "classify",
    ) -> list[list[tuple[str, float]]]:
        """Classify feature dicts (tf.Example features); per example, (label, score) pairs."""
        ref = ModelRef(model, version, label, signature_name)
        payload = {"signature_name": signature_name, "examples": [_example(e) for e in examples]}
        result = self._call("POST", ref.path() + ":classify", payload)["result"]
        return [[(str(label), float(score)) for label, score in row] for row in result]

    def regress(
        self,
        model: str,
        examples: list[dict[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "regress",
    ) -> list[float]:
        ref = ModelRef(model, version, label, signature_name)
        payload = {"signature_name": signature_name, "examples": [_example(e) for e in examples]}
        return [float(v) for v in self._call("POST", ref.path() + ":regress", payload)["result"]]

    def _signature(self, ref: ModelRef) -> dict:
        if ref not in self._signatures:
            metadata = self.metadata(ref.name, ref.version, ref.label)
            signatures = metadata["metadata"]["signature_def"]["signature_def"]
            key = ref.signature_name or "serving_default"
            if key not in signatures:
                raise ServingClientError(f"model {ref.name} has no signature {key!r}", 400)
            self._signatures[ref] = signatures[key]
        return self._signatures[ref]

    def _single_input(self, ref: ModelRef) -> str:
        names = list(self._signature(ref)["inputs"])
        if len(names) != 1:
            raise ServingClientError(f"model {ref.name} takes inputs {names}: pass a dict", 400)
        return names[0]

    def _single_output(self, ref: ModelRef) -> str:
        return next(iter(self._signature(ref)["outputs"]))

    def input_spec(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> InputSpec:
        ref = ModelRef(model, version, label, signature_name)
        name = self._single_input(ref)
        info = self._signature(ref)["inputs"][name]
        dims = info.get("tensor_shape", {}).get("dim", [])
        shape = tuple(None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in dims)
        return InputSpec(name, info.get("dtype", "DT_INVALID"), shape)


class GrpcClient:
    """TF Serving gRPC client on the official `tensorflow-serving-api` stubs."""

    def __init__(
        self,
        target: str = DEFAULT_GRPC_TARGET,
        timeout: float = 30.0,
        credentials: Credentials = NO_CREDENTIALS,
    ) -> None:
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if credentials.ca_file:
            secure = grpc.ssl_channel_credentials(
                root_certificates=_read(credentials.ca_file),
                private_key=_read(credentials.key_file) if credentials.key_file else None,
                certificate_chain=_read(credentials.cert_file) if credentials.cert_file else None,
            )
            self._channel = grpc.secure_channel(target, secure)
        else:
            self._channel = grpc.insecure_channel(target)
        self._metadata = credentials.metadata()
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._timeout = timeout
        self._target = target
        self._signatures: dict[ModelRef, Any] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:

        try:
            return method(request, timeout=self._timeout, metadata=self._metadata or None)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            raise ServingClientError(f"{code}: {exc.details()}", code) from None

    @staticmethod
    def _spec(spec: Any, ref: ModelRef) -> None:
        spec.name = ref.name
        if ref.version is not None:
            spec.version.value = ref.version
        if ref.label is not None:
            spec.version_label = ref.label
        if ref.signature_name:
            spec.signature_name = ref.signature_name

    def status(self, model: str, version: int | None = None, label: str | None = None) -> Any:
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, ModelRef(model, version, label))
        return self._call(self._models.GetModelStatus, request)

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> Any:
        """The SignatureDefMap of a model version."""
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, ModelRef(model, version, label))
        response = self._call(self._predict.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> dict[str, np.ndarray]:
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        ref = ModelRef(model, version, label, signature_name)
        signature = self._signature(ref)
        if not isinstance(inputs, dict):
            if len(signature.inputs) != 1:
                raise ServingClientError(f"model {model} takes several inputs: pass a dict", 400)
            inputs = {next(iter(signature.inputs)): inputs}
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, ref)
        for key, value in inputs.items():
            array = _as_array(value)
            if key in signature.inputs and array.dtype != object:  # gRPC tensors are typed
                array = array.astype(tf.as_dtype(signature.inputs[key].dtype).as_numpy_dtype)
            request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
        response = self._call(self._predict.Predict, request)
        return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}

    def _signature(self, ref: ModelRef) -> Any:
        if ref not in self._signatures:
            signatures = self.metadata(ref.name, ref.version, ref.label).signature_def
            key = ref.signature_name or "serving_default"
            if key not in signatures:
                raise ServingClientError(f"model {ref.name} has no signature {key!r}", 400)
            self._signatures[ref] = signatures[key]
        return self._signatures[ref]

    def input_spec(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> InputSpec:
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        from tensorflow.core.framework import types_pb2

        ref = ModelRef(model, version, label, signature_name)
        signature = self._signature(ref)
        if len(signature.inputs) != 1:
            names = list(signature.inputs)
            raise ServingClientError(f"model {model} takes inputs {names}: pass a dict", 400)
        name, info = next(iter(signature.inputs.items()))
        shape = tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
        return InputSpec(name, types_pb2.DataType.Name(info.dtype), shape)

    def classify(
        self,
        model: str,
        examples: list[dict[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "classify",
    ) -> list[list[tuple[str, float]]]:
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, ModelRef(model, version, label, signature_name))
        for example in examples:
            request.input.example_list.examples.append(tf_example(example))
        result = self._call(self._predict.Classify, request).result
        return [[(c.label, c.score) for c in row.classes] for row in result.classifications]

    def regress(
        self,
        model: str,
        examples: list[dict[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "regress",
    ) -> list[float]:
        # deferred: TensorFlow loads slowly; a REST-only client never needs it
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, ModelRef(model, version, label, signature_name))
        for example in examples:
            request.input.example_list.examples.append(tf_example(example))
        result = self._call(self._predict.Regress, request).result
        return [r.value for r in result.regressions]


def connect(
    address: str | None = None,
    grpc: bool = False,
    timeout: float = 30.0,
    credentials: Credentials = NO_CREDENTIALS,
) -> Any:
    """A RestClient for an http(s) URL, or a GrpcClient for host:port when `grpc` is true."""
    if grpc:
        return GrpcClient(address or DEFAULT_GRPC_TARGET, timeout, credentials)
    return RestClient(address or DEFAULT_REST_URL, timeout, credentials)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServingClientError(f"cannot read {path}: {exc.strerror}") from None


def _ssl_context(ca_file: str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert:
            context.load_cert_chain(*cert)
    except (OSError, ssl.SSLError) as exc:
        raise ServingClientError(f"cannot use the TLS files {ca_file}, {cert}: {exc}") from None
    return context


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(object) if array.dtype.kind in "US" else array


def _to_json(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind in "SO":
        return _bytes_to_json(array.tolist())
    return array.tolist()


def _bytes_to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_bytes_to_json(item) for item in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _example(features: dict[str, Any]) -> dict[str, Any]:
    """A JSON example: flat lists, floats kept as floats, bytes as {"b64": ...}."""
    result = {}
    for key, value in features.items():
        array = np.asarray(value)
        if array.dtype.kind in "SO":
            result[key] = _bytes_to_json(array.reshape(-1).tolist())
        elif array.dtype.kind == "f":
            result[key] = [float(v) for v in array.reshape(-1)]
        else:
            result[key] = array.reshape(-1).tolist()
    return result


def tf_example(features: dict[str, Any]) -> Any:
    """A tf.train.Example from a feature dict (floats, integers, strings or bytes)."""
    # deferred: TensorFlow loads slowly; a REST-only client never needs it
    from tensorflow.core.example import example_pb2

    proto = example_pb2.Example()
    for key, value in features.items():
        array = np.asarray(value).reshape(-1)
        feature = proto.features.feature[key]
        if array.dtype.kind == "f":
            feature.float_list.value.extend(array.tolist())
        elif array.dtype.kind in "iub":
            feature.int64_list.value.extend(int(v) for v in array)
        else:
            feature.bytes_list.value.extend(
                v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.tolist()
            )
    return proto
