"""The Open Inference Protocol (v2) over gRPC: `inference.GRPCInferenceService` on the gRPC port,
beside TF Serving's PredictionService and ModelService.

The messages are the protocol's own, from the generated `grpc_service.proto` modules that
`tritonclient` ships (Triton's service: the OIP v2 RPCs plus Triton's extensions). Only the
RPCs below are registered; any other method of the service answers UNIMPLEMENTED.

    ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
    ModelInfer (`contents` or `raw_input_contents` in, `raw_output_contents` out),
    RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload (control token)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from kerasops.serving import v2
from kerasops.serving.auth import Tokens
from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError, invalid
from kerasops.serving.manager import ModelManager
from kerasops.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
PROTOCOL = "grpc_v2"
# InferTensorContents field per datatype (FP16 travels only as raw contents).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class OipGrpc:
    """Servicer of `inference.GRPCInferenceService`; every error becomes a gRPC status."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        config: ServingConfig,
        tokens: Tokens | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.config = config
        self.tokens = tokens or Tokens(config)

    async def _answer(
        self,
        api_name: str,
        model: str,
        context: Any,
        handler: Callable[[], Awaitable[Any]],
        auth: str = "inference",
    ) -> Any:
        started = time.perf_counter()
        try:
            authorization = _metadata(context, "authorization")
            if auth == "control":
                self.tokens.check_control(authorization)
            elif auth == "inference":
                self.tokens.check_inference(authorization)
            response = await handler()
        except ServingError as exc:
            self.metrics.observe(model, api_name, PROTOCOL, exc.code, time.perf_counter() - started)
            await context.abort(exc.grpc_code(), exc.message)
        except Exception as exc:  # noqa: BLE001 - answer INTERNAL, keep serving
            log.exception("unexpected error answering %s", api_name)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        self.metrics.observe(model, api_name, PROTOCOL, "OK", time.perf_counter() - started)
        return response

    # -- health and metadata ------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - RPC name
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.manager.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def ready() -> Any:
            try:
                v2.resolve(self.manager, request.name, request.version)
            except ServingError as exc:
                if exc.code != "NOT_FOUND":
                    raise
                return service_pb2.ModelReadyResponse(ready=False)
            return service_pb2.ModelReadyResponse(ready=True)

        return await self._answer("model_ready", request.name, context, ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def metadata() -> Any:
            return service_pb2.ServerMetadataResponse(**v2.server_metadata())

        return await self._answer("server_metadata", "", context, metadata)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def metadata() -> Any:
            servable = v2.resolve(self.manager, request.name, request.version)
            fields = v2.model_metadata(self.manager, servable)
            response = service_pb2.ModelMetadataResponse(
                name=fields["name"], versions=fields["versions"], platform=fields["platform"]
            )
            for key in ("inputs", "outputs"):
                for tensor in fields[key]:
                    getattr(response, key).add(**tensor)
            return response

        return await self._answer("model_metadata", request.name, context, metadata)

    # -- infer --------------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(
            "infer", request.model_name, context, lambda: self._infer(request)
        )

    async def _infer(self, request: Any) -> Any:
        servable = v2.resolve(self.manager, request.model_name, request.model_version)
        parameters = {key: _parameter(value) for key, value in request.parameters.items()}
        signature = v2.signature_of(servable, parameters)
        inputs = self._inputs(request, signature)
        requested = [output.name for output in request.outputs]
        outcome = await v2.infer(servable, signature, inputs, requested, self.config)
        response = service_pb2.ModelInferResponse(
            model_name=servable.name, model_version=str(servable.version), id=request.id
        )
        for key, array in outcome.outputs.items():
            response.outputs.add(name=key, datatype=v2.datatype_of(array.dtype), shape=array.shape)
            response.raw_output_contents.append(v2.raw_bytes(array))
        return response

    def _inputs(self, request: Any, signature: Any) -> dict[str, np.ndarray]:
        if not request.inputs:
            raise invalid("the request names no inputs")
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise invalid(
                f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per "
                "input, in order, or use contents"
            )
        inputs: dict[str, np.ndarray] = {}
        allow_nan = self.config.allow_nan
        for index, tensor in enumerate(request.inputs):
            if tensor.name in inputs:
                raise invalid(f"input '{tensor.name}' is given twice")
            shape = list(tensor.shape)
            if raw:
                if tensor.HasField("contents"):
                    raise invalid(f"input '{tensor.name}' has contents and raw_input_contents")
                inputs[tensor.name] = v2.array_from_raw(
                    signature, tensor.name, tensor.datatype, shape, raw[index], allow_nan
                )
                continue
            field = CONTENTS.get(tensor.datatype)
            if field is None:
                raise invalid(
                    f"input '{tensor.name}': {tensor.datatype or 'no datatype'} data must come "
                    "as raw_input_contents"
                )
            values = getattr(tensor.contents, field)
            data = list(values) if tensor.datatype == "BYTES" else np.asarray(values)
            if tensor.datatype != "BYTES":
                data = data.astype(v2.DATATYPES[tensor.datatype], copy=False)
            inputs[tensor.name] = v2.array_from_data(
                signature, tensor.name, tensor.datatype, shape, data, allow_nan
            )
        return inputs

    # -- model repository extension -----------------------------------------------------------
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def index() -> Any:
            response = service_pb2.RepositoryIndexResponse()
            for row in v2.repository_index(self.manager, self.config, request.ready):
                response.models.add(**row)
            return response

        return await self._answer("repository_index", "", context, index, auth="control")

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def load() -> Any:
            _check_parameters(request)
            await v2.load_model(self.manager, self.config, request.model_name)
            return service_pb2.RepositoryModelLoadResponse()

        name = request.model_name
        return await self._answer("repository_load", name, context, load, auth="control")

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def unload() -> Any:
            _check_parameters(request)
            await v2.unload_model(self.manager, request.model_name)
            return service_pb2.RepositoryModelUnloadResponse()

        name = request.model_name
        return await self._answer("repository_unload", name, context, unload, auth="control")


def _parameter(value: Any) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def _check_parameters(request: Any) -> None:
    v2.check_repository_parameters(dict(request.parameters))


def _metadata(context: Any, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value
    return None


_RPCS = {
    "ServerLive": (service_pb2.ServerLiveRequest, service_pb2.ServerLiveResponse),
    "ServerReady": (service_pb2.ServerReadyRequest, service_pb2.ServerReadyResponse),
    "ModelReady": (service_pb2.ModelReadyRequest, service_pb2.ModelReadyResponse),
    "ServerMetadata": (service_pb2.ServerMetadataRequest, service_pb2.ServerMetadataResponse),
    "ModelMetadata": (service_pb2.ModelMetadataRequest, service_pb2.ModelMetadataResponse),
    "ModelInfer": (service_pb2.ModelInferRequest, service_pb2.ModelInferResponse),
    "RepositoryIndex": (service_pb2.RepositoryIndexRequest, service_pb2.RepositoryIndexResponse),
    "RepositoryModelLoad": (
        service_pb2.RepositoryModelLoadRequest,
        service_pb2.RepositoryModelLoadResponse,
    ),
    "RepositoryModelUnload": (
        service_pb2.RepositoryModelUnloadRequest,
        service_pb2.RepositoryModelUnloadResponse,
    ),
}


def add_v2_service(server: Any, servicer: OipGrpc) -> None:
    """Register the OIP RPCs `servicer` implements under `inference.GRPCInferenceService`."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in _RPCS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
