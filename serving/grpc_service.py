"""TF Serving's gRPC API (PredictionService, ModelService) on grpc.aio, from a ModelManager."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.python.util import compat
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)

from kerasops.serving import api
from kerasops.serving.auth import Tokens, check_under_roots, reload_roots
from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError, invalid
from kerasops.serving.manager import ModelManager
from kerasops.serving.metrics import ServingMetrics
from kerasops.serving.repository import RepositoryError, entries_from_proto, mapping_for
from kerasops.serving.servable import Servable, to_array

log = logging.getLogger(__name__)


def _version_choice(model_spec: Any) -> tuple[int | None, str | None]:
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label or None
    return None, None


_DATATYPES: dict[np.dtype, int] = {}  # numpy dtype -> DataType enum
_NUMPY_DTYPES: dict[int, np.dtype | None] = {}  # DataType enum -> numpy dtype (None: strings)


def _datatype(dtype: np.dtype) -> int:
    enum = _DATATYPES.get(dtype)
    if enum is None:
        enum = _DATATYPES[dtype] = tf.as_dtype(dtype).as_datatype_enum
    return enum


def _numpy_dtype(enum: int) -> np.dtype | None:
    """The numpy dtype of a DataType whose values `tensor_content` holds as raw bytes (None for
    strings); an unknown enum raises TypeError."""
    if enum not in _NUMPY_DTYPES:
        dtype = tf.as_dtype(enum)
        _NUMPY_DTYPES[enum] = None if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    return _NUMPY_DTYPES[enum]


def fill_tensor_proto(proto: Any, array: np.ndarray) -> None:
    """`proto` := the TensorProto of a numpy array, as `tf.make_tensor_proto` writes it for a
    string array (`string_val`) and as TF Serving answers numeric ones (`tensor_content`),
    without make_tensor_proto's per-element Python work."""
    if array.dtype == object:
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            value if type(value) is bytes else compat.as_bytes(value) for value in array.flat
        )
    else:
        proto.dtype = _datatype(array.dtype)
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size


def from_tensor_proto(proto: Any) -> np.ndarray:
    """The numpy array of a TensorProto (`tensor_content` read without a copy when present)."""
    if proto.tensor_content:
        dtype = _numpy_dtype(proto.dtype)
        if dtype is not None:
            shape = [dim.size for dim in proto.tensor_shape.dim]
            return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    return tf.make_ndarray(proto)


def _tensor_to_array(proto: Any, spec: Any, allow_nan: bool) -> np.ndarray:
    try:
        array = from_tensor_proto(proto)
    except Exception as exc:  # noqa: BLE001 - a malformed TensorProto is the caller's mistake
        raise invalid(f"input '{spec.name}' is not a valid TensorProto: {exc}") from None
    if spec.is_string != (array.dtype == object):
        raise invalid(f"input '{spec.name}' expects {spec.dtype.name}, got {array.dtype.name}")
    if not spec.is_string and array.dtype != spec.dtype:
        raise invalid(
            f"Expects arg[0] to be {spec.dtype.name} but {array.dtype.name} is provided "
            f"(input '{spec.name}')"
        )
    return to_array(array, spec, allow_nan)


class TensorflowServing:
    """Servicer for PredictionService and ModelService; every error becomes a gRPC status."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        config: ServingConfig,
        models_config_path: Path | None = None,
        tokens: Tokens | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.config = config
        self.models_config_path = models_config_path
        self.tokens = tokens or Tokens(config)

    async def _answer(
        self,
        api_name: str,
        request: Any,
        context: Any,
        handler: Callable[[], Awaitable[Any]],
        control: bool = False,
    ) -> Any:
        started = time.perf_counter()
        model = getattr(getattr(request, "model_spec", None), "name", "")
        try:
            if control:
                self.tokens.check_control(_metadata(context, "authorization"))
            elif self.tokens.inference is not None:  # no token asked: metadata left unread
                self.tokens.check_inference(_metadata(context, "authorization"))
            response = await handler()
        except ServingError as exc:
            self.metrics.observe(model, api_name, "grpc", exc.code, time.perf_counter() - started)
            await context.abort(exc.grpc_code(), exc.message)
        except Exception as exc:  # noqa: BLE001 - answer INTERNAL, keep serving
            log.exception("unexpected error answering %s", api_name)

            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        self.metrics.observe(model, api_name, "grpc", "OK", time.perf_counter() - started)
        return response

    def _resolve(self, model_spec: Any) -> Servable:
        version, label = _version_choice(model_spec)
        return self.manager.resolve(model_spec.name, version, label)

    # -- PredictionService ------------------------------------------------------------------
    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return await self._answer("predict", request, context, lambda: self._predict(request))

    async def _predict(self, request: Any) -> Any:

        servable = self._resolve(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name or None)
        inputs = {}
        for key, proto in request.inputs.items():
            spec = signature.inputs.get(key)
            if spec is None:
                expected = ", ".join(sorted(signature.inputs))
                raise invalid(f"input '{key}' is not in signature; expected: {expected}")
            inputs[key] = _tensor_to_array(proto, spec, self.config.allow_nan)
        rows = api.check_inputs(signature, inputs, self.config.max_rows)
        outputs = await signature.run_async(inputs, rows)
        outputs = api.filter_outputs(outputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, servable, signature.name)
        for key, value in outputs.items():
            fill_tensor_proto(response.outputs[key], value)
        return response

    def _fill_spec(self, spec: Any, servable: Servable, signature_name: str) -> None:
        spec.name = servable.name
        spec.version.value = servable.version
        spec.signature_name = signature_name

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer("metadata", request, context, lambda: self._metadata(request))

    async def _metadata(self, request: Any) -> Any:

        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise invalid('Metadata field must be exactly "signature_def"')
        servable = self._resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec, servable, "")
        response.model_spec.ClearField("signature_name")
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response

    async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer("classify", request, context, lambda: self._classify(request))

    async def _classify(self, request: Any) -> Any:

        servable, signature, outputs = await self._run_examples(
            request, api.check_classify_signature
        )
        response = classification_pb2.ClassificationResponse()
        self._fill_spec(response.model_spec, servable, signature.name)
        for row in api.classifications(outputs):
            result = response.result.classifications.add()
            for label, score in row:
                result.classes.add(label=label, score=score)
        return response

    async def _run_examples(self, request: Any, check: Any) -> tuple[Any, Any, Any]:
        """Resolve the servable and signature of a Classify/Regress request, check the
        signature with `check`, and run it on the request's tf.Examples."""
        servable = self._resolve(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name or None)
        check(signature)
        inputs = api.examples_array(_serialized_examples(request.input), self.config.max_rows)
        outputs = await signature.run_async(inputs, len(inputs[api.CLASSIFY_INPUTS]))
        return servable, signature, outputs

    async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer("regress", request, context, lambda: self._regress(request))

    async def _regress(self, request: Any) -> Any:

        servable, signature, outputs = await self._run_examples(
            request, api.check_regress_signature
        )
        response = regression_pb2.RegressionResponse()
        self._fill_spec(response.model_spec, servable, signature.name)
        for value in api.regressions(outputs):
            response.result.regressions.add(value=value)
        return response

    async def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(
            "multi_inference", request, context, lambda: self._multi_inference(request)
        )

    async def _multi_inference(self, request: Any) -> Any:
        """Classify and/or Regress on one model, the same examples, each task its signature
        (TF Serving's multi_inference.cc: one model, distinct signatures, results in order)."""
        if not request.tasks:
            raise invalid("MultiInferenceRequest must name at least one task")
        names = {task.model_spec.name for task in request.tasks}
        if len(names) != 1:
            raise invalid("all tasks of a MultiInferenceRequest must name the same model")
        signature_names = [
            task.model_spec.signature_name or "serving_default" for task in request.tasks
        ]
        if len(set(signature_names)) != len(signature_names):
            raise invalid("duplicate evaluation of a signature in one MultiInferenceRequest")
        inputs = api.examples_array(_serialized_examples(request.input), self.config.max_rows)
        rows = len(inputs[api.CLASSIFY_INPUTS])
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            check, fill = _MULTI_METHODS.get(task.method_name, (None, None))
            if check is None:
                raise invalid(
                    f"unsupported method_name {task.method_name!r} in a MultiInference task: "
                    f"use one of {', '.join(sorted(_MULTI_METHODS))}"
                )
            servable = self._resolve(task.model_spec)
            signature = servable.signature(task.model_spec.signature_name or None)
            check(signature)
            outputs = await signature.run_async(inputs, rows)
            result = response.results.add()
            self._fill_spec(result.model_spec, servable, signature.name)
            fill(result, outputs)
        return response

    # -- ModelService -----------------------------------------------------------------------
    async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(
            "status", request, context, lambda: self._status(request, context)
        )

    async def _status(self, request: Any, context: Any) -> Any:

        version, label = _version_choice(request.model_spec)
        states = self.manager.status(request.model_spec.name, version, label)
        response = get_model_status_pb2.GetModelStatusResponse()
        state_enum = get_model_status_pb2.ModelVersionStatus.State
        for state in states:
            response.model_version_status.add(
                version=state.version,
                state=state_enum.Value(state.state),
                status=status_pb2.StatusProto(
                    error_code=_code_value(state.error_code), error_message=state.error_message
                ),
            )
        shadow = self.manager.shadow_status(request.model_spec.name)
        if shadow is not None and version is None and label is None:  # beside TF Serving's reply
            context.set_trailing_metadata((("kerasops-shadow", json.dumps(shadow)),))
        return response

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(
            "reload", request, context, lambda: self._reload(request), control=True
        )

    async def _reload(self, request: Any) -> Any:

        base = self.models_config_path.parent if self.models_config_path else Path.cwd()
        try:
            entries = entries_from_proto(
                request.config, base, mapping_for(self.config), "ReloadConfigRequest"
            )
        except (RepositoryError, ValueError) as exc:
            raise invalid(str(exc)) from None
        roots = reload_roots(self.config)
        for entry in entries:
            check_under_roots(entry.name, entry.base_path, roots)
        await asyncio.to_thread(self.manager.reload_config, entries)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.CopyFrom(status_pb2.StatusProto(error_code=0))
        return response


def _fill_classification(result: Any, outputs: dict[str, np.ndarray]) -> None:
    for row in api.classifications(outputs):
        classes = result.classification_result.classifications.add()
        for label, score in row:
            classes.classes.add(label=label, score=score)


def _fill_regression(result: Any, outputs: dict[str, np.ndarray]) -> None:
    for value in api.regressions(outputs):
        result.regression_result.regressions.add(value=value)


_MULTI_METHODS = {
    "tensorflow/serving/classify": (api.check_classify_signature, _fill_classification),
    "tensorflow/serving/regress": (api.check_regress_signature, _fill_regression),
}


def _metadata(context: Any, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value
    return None


def _code_value(name: str) -> int:

    codes = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    return codes.values_by_name[name].number


def _serialized_examples(model_input: Any) -> list[bytes]:
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [example.SerializeToString() for example in model_input.example_list.examples]
    if kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        merged = []
        for example in with_context.examples:
            combined = type(example)()
            combined.CopyFrom(with_context.context)
            for key, feature in example.features.feature.items():
                combined.features.feature[key].CopyFrom(feature)
            merged.append(combined.SerializeToString())
        return merged
    raise invalid("Input is empty: set example_list or example_list_with_context")


def add_services(server: Any, servicer: TensorflowServing) -> None:

    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
