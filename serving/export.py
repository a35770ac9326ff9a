"""Export a Keras model as a SavedModel version in TF Serving's layout.

Signatures written (names and keys as TF Serving expects them):

* `serving_default` (Predict): `{<input role>: raw values}` -> `{<output layer name>: values}`,
  e.g. `image` -> `probabilities`; a classifier also answers `classes`, its class names (B, K)
  in the order of `probabilities`. Preprocessing is inside the model, so clients send raw values.
  A model with named (dict) outputs answers with those names, e.g. a detector's `boxes`,
  `classes`, `scores` and `num_detections`, a segmenter's `mask` (int32 class ids per pixel)
  and `probabilities`.
* `classify` (classifiers, last layer `probabilities`): `inputs` = serialized `tf.Example`s with
  one feature named like the model input -> `classes` (string labels) and `scores`.
* `regress` (regressors with one value per example, last layer `forecast`): `inputs` =
  serialized `tf.Example`s -> `outputs`.

TF2 SavedModels record every signature with the predict method name; TF Serving accepts them for
Classify/Regress with its default `--enable_signature_method_name_check=false`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from kerasops.serving.config import ServingConfig
from kerasops.serving.repository import (
    FEATURE_NAMES_KEY,
    INFO_FILE,
    RepositoryError,
    check_model_name,
    list_versions,
    publish_version,
)

log = logging.getLogger(__name__)

WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO_FILE = INFO_FILE
CLASSIFY_SIGNATURE = "classify"
REGRESS_SIGNATURE = "regress"


class ExportError(RepositoryError):
    """The model cannot be exported as asked (layout, names, version clash)."""


@dataclasses.dataclass(frozen=True)
class ModelIO:
    """Names, shape and dtype of a model's single input and its output.

    A model with named outputs (a dict, e.g. an anomaly scorer's `anomaly_score` and
    `is_anomaly`) lists them in `output_names`; `output_name`/`output_shape` are its first.
    """

    input_name: str
    input_shape: tuple[int | None, ...]  # (None, ...) with the batch axis first
    input_dtype: str
    output_name: str
    output_shape: tuple[int | None, ...]
    output_names: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """'classifier', 'regressor' or 'other', from the output layer's name."""
        if self.output_names:
            return "other"
        kinds = {"probabilities": "classifier", "forecast": "regressor"}
        return kinds.get(self.output_name, "other")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    model_name: str
    version: int
    path: Path
    signatures: tuple[str, ...]
    warmup_records: int


def describe_model(model: Any) -> ModelIO:
    """Read the input role name and the output name(s) of a single-input functional model."""
    named = isinstance(model.output, dict)
    if len(model.inputs) != 1 or (len(model.outputs) != 1 and not named):
        raise ExportError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; export expects one named input and one output (or a dict of named outputs)"
        )
    tensor_in, tensor_out = model.inputs[0], model.outputs[0]
    output_layer = tensor_out._keras_history.operation  # the layer that produced the output
    return ModelIO(
        input_name=tensor_in.name,
        input_shape=tuple(tensor_in.shape),
        input_dtype=str(tensor_in.dtype),
        output_name=next(iter(model.output)) if named else output_layer.name,
        output_shape=tuple(tensor_out.shape),
        output_names=tuple(model.output) if named else (),
    )


def _example_feature(io: ModelIO) -> Any:
    """A FixedLenFeature parsing one example's input, or None when the shape is not fixed."""

    shape = io.input_shape[1:]
    if any(dim is None for dim in shape):
        return None
    dtype = tf.as_dtype(io.input_dtype)
    if dtype == tf.string:
        parse_dtype = tf.string
    elif dtype.is_floating:
        parse_dtype = tf.float32
    else:
        parse_dtype = tf.int64
    return tf.io.FixedLenFeature(shape, parse_dtype)


def _add_endpoints(archive: Any, model: Any, io: ModelIO, class_names: Sequence[str]) -> list[str]:

    spec = tf.TensorSpec(io.input_shape, tf.as_dtype(io.input_dtype), name=io.input_name)
    labels = tf.constant(list(class_names), dtype=tf.string)

    def predict(x: Any) -> dict[str, Any]:
        outputs = model(x, training=False)
        if io.output_names:
            return dict(outputs)
        if io.kind == "classifier":  # the class names beside their probabilities
            return {io.output_name: outputs, "classes": tile_labels(labels, outputs)}
        return {io.output_name: outputs}

    archive.add_endpoint(name="serving_default", fn=predict, input_signature=[spec])
    names = ["serving_default"]
    feature = _example_feature(io)
    examples = tf.TensorSpec([None], tf.string, name="inputs")
    if feature is None or io.kind == "other" or io.output_names:
        return names

    def parse(serialized: Any) -> Any:
        parsed = tf.io.parse_example(serialized, {io.input_name: feature})[io.input_name]
        return tf.cast(parsed, tf.as_dtype(io.input_dtype))

    if io.kind == "classifier":

        def classify(serialized: Any) -> dict[str, Any]:
            scores = model(parse(serialized), training=False)  # (B, K)
            return {"classes": tile_labels(labels, scores), "scores": scores}

        archive.add_endpoint(name=CLASSIFY_SIGNATURE, fn=classify, input_signature=[examples])
        names.append(CLASSIFY_SIGNATURE)
    elif io.kind == "regressor" and _values_per_example(io.output_shape) == 1:

        def regress(serialized: Any) -> dict[str, Any]:
            values = model(parse(serialized), training=False)
            return {"outputs": tf.reshape(values, [-1])}  # (B,)

        archive.add_endpoint(name=REGRESS_SIGNATURE, fn=regress, input_signature=[examples])
        names.append(REGRESS_SIGNATURE)
    return names


def tile_labels(labels: Any, scores: Any) -> Any:
    """The (K,) class names repeated for every row of (B, K) scores: (B, K) strings."""
    return tf.tile(labels[None, :], [tf.shape(scores)[0], 1])


def _values_per_example(shape: tuple[int | None, ...]) -> int | None:
    size = 1
    for dim in shape[1:]:
        if dim is None:
            return None
        size *= dim
    return size


def class_names_for(io: ModelIO, class_names: Sequence[str] | None) -> list[str]:
    """Labels for the classify signature: the given names, or the class indices as strings."""
    num_classes = io.output_shape[-1] if io.output_shape else None
    if class_names is None:
        return [str(i) for i in range(num_classes or 0)]
    if num_classes is not None and len(class_names) != num_classes:
        raise ExportError(
            f"{len(class_names)} class names given for a model with {num_classes} classes"
        )
    return [str(name) for name in class_names]


def feature_names_for(io: ModelIO, feature_names: Sequence[str] | None) -> list[str] | None:
    """The names of a feature-row input's F columns, in the order of its last axis; None
    without names. Raise ExportError when they do not fit an input of shape (B, F)."""
    if not feature_names:
        return None
    names = [str(name) for name in feature_names]
    if len(io.input_shape) != 2 or io.input_shape[1] != len(names):
        raise ExportError(
            f"{len(names)} feature names given for input {io.input_name!r} of shape "
            f"{io.input_shape}; they name the F columns of an input (B, F)"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ExportError(f"feature names repeated: {', '.join(repeated)}")
    return names


def write_warmup_requests(
    version_dir: Path, model_name: str, io: ModelIO, examples: np.ndarray
) -> int:
    """Write `assets.extra/tf_serving_warmup_requests`: one PredictionLog per example row."""

    target = version_dir / "assets.extra"
    target.mkdir(parents=True, exist_ok=True)
    dtype = tf.as_dtype(io.input_dtype).as_numpy_dtype
    with tf.io.TFRecordWriter(str(target / WARMUP_FILE)) as writer:
        for row in examples:
            batch = np.asarray(row, dtype=object if dtype is object else dtype)[None, ...]
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            request.inputs[io.input_name].CopyFrom(tf.make_tensor_proto(batch))
            log_record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log_record.SerializeToString())
    return len(examples)


def _check_version(model_base: Path, version: int | None) -> None:
    """Refuse a version that exists or is not positive, before any export work."""
    if version is None:
        return
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    if version in list_versions(model_base):
        raise ExportError(
            f"version {version} already exists in {model_base}; pick another or omit --version"
        )


def export_saved_model(
    model: Any,
    model_name: str,
    *,
    config: ServingConfig | None = None,
    version: int | None = None,
    warmup_examples: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    labels: Sequence[str] = (),
    info: dict[str, Any] | None = None,
) -> ExportResult:
    """Export `model` as the next version (or `version`) of `<repository>/<model_name>/` and
    publish it through the repository's one writer (`publish_version`: one rename, then
    models.config with `labels` pointing at the new version). `feature_names` (a feature-row
    model's input columns, in order) go into the version's self-description, where
    `kerasops predict-batch` matches a CSV's columns to them. Raise ExportError on a clash."""

    config = config or ServingConfig()
    check_model_name(model_name)
    io = describe_model(model)
    features = feature_names_for(io, feature_names)
    model_base = Path(config.model_repository) / model_name
    _check_version(model_base, version)
    model_base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_base))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        signatures = _add_endpoints(archive, model, io, class_names_for(io, class_names))
        archive.write_out(str(staging / "model"), verbose=False)
        records = 0
        if _fits_input(warmup_examples, io) and config.num_warmup_records:
            rows = np.asarray(warmup_examples)[: config.num_warmup_records]
            records = write_warmup_requests(staging / "model", model_name, io, rows)
        described = {"io": dataclasses.asdict(io), "signatures": signatures, **(info or {})}
        if features is not None:
            described[FEATURE_NAMES_KEY] = features
        try:
            version = publish_version(
                config,
                model_name,
                staging / "model",
                version,
                labels=dict.fromkeys(labels),
                info=described,
                move=True,
            )
        except RepositoryError as exc:
            raise ExportError(str(exc)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    target = model_base / str(version)
    log.info("exported %s version %d to %s", model_name, version, target)
    return ExportResult(model_name, version, target, tuple(signatures), records)


def _fits_input(examples: np.ndarray | None, io: ModelIO) -> bool:
    """Whether dataset examples can warm the model up (a GAN generator takes noise instead)."""
    if examples is None:
        return False
    shape = tuple(np.asarray(examples).shape[1:])
    expected = io.input_shape[1:]
    fits = len(shape) == len(expected) and all(
        e is None or e == s for s, e in zip(shape, expected, strict=True)
    )
    if not fits:
        log.info("no warmup requests: examples of shape %s do not fit input %s", shape, expected)
    return fits
