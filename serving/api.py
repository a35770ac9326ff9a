"""What Predict, Classify and Regress do, shared by the REST and gRPC front ends."""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasops.serving.errors import invalid
from kerasops.serving.servable import Signature, check_shape

CLASSIFY_INPUTS = "inputs"


def check_inputs(
    signature: Signature, inputs: dict[str, np.ndarray], max_rows: int | None = None
) -> int:
    """Check names and shapes against the signature; return the batch size (rows).
    Raise INVALID_ARGUMENT beyond `max_rows` rows."""
    missing = sorted(set(signature.inputs) - set(inputs))
    extra = sorted(set(inputs) - set(signature.inputs))
    if missing or extra:
        expected = ", ".join(sorted(signature.inputs))
        wrong = f"missing {missing}" if missing else f"unknown {extra}"
        raise invalid(
            f"input names do not match signature '{signature.name}': {wrong}; expected: {expected}"
        )
    rows = None
    for key, array in inputs.items():
        check_shape(array, signature.inputs[key])
        if array.ndim == 0:
            raise invalid(f"input '{key}' has no batch dimension")
        if rows is not None and array.shape[0] != rows:
            raise invalid("all inputs must have the same batch size (first dimension)")
        rows = array.shape[0]
    if not rows:
        raise invalid("the request holds no examples")
    if max_rows is not None and rows > max_rows:
        raise invalid(f"the request holds {rows} examples; at most {max_rows} (serving.max_rows)")
    return rows


def filter_outputs(
    outputs: dict[str, np.ndarray], output_filter: list[str]
) -> dict[str, np.ndarray]:
    if not output_filter:
        return outputs
    unknown = [key for key in output_filter if key not in outputs]
    if unknown:
        raise invalid(f"output tensor alias not found in signature: {unknown[0]}")
    return {key: outputs[key] for key in output_filter}


def check_classify_signature(signature: Signature) -> None:
    _check_example_input(signature, "classification")
    if not {"classes", "scores"} & set(signature.outputs):
        raise invalid(
            f"signature '{signature.name}' is not a classification signature: "
            "expected output 'classes' and/or 'scores'"
        )


def check_regress_signature(signature: Signature) -> None:
    _check_example_input(signature, "regression")
    if "outputs" not in signature.outputs:
        raise invalid(
            f"signature '{signature.name}' is not a regression signature: expected output 'outputs'"
        )


def _check_example_input(signature: Signature, kind: str) -> None:
    spec = signature.inputs.get(CLASSIFY_INPUTS)
    if len(signature.inputs) != 1 or spec is None or not spec.is_string:
        raise invalid(
            f"signature '{signature.name}' is not a {kind} signature: expected one string input "
            f"'{CLASSIFY_INPUTS}' of serialized tf.Examples (try signature_name "
            f'"{"classify" if kind == "classification" else "regress"}")'
        )


def examples_array(serialized: list[bytes], max_rows: int | None = None) -> dict[str, np.ndarray]:
    if not serialized:
        raise invalid("the request holds no examples")
    if max_rows is not None and len(serialized) > max_rows:
        raise invalid(
            f"the request holds {len(serialized)} examples; at most {max_rows} (serving.max_rows)"
        )
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return {CLASSIFY_INPUTS: array}


def classifications(outputs: dict[str, np.ndarray]) -> list[list[tuple[str, float]]]:
    """Per example, (label, score) pairs from the `classes` and/or `scores` outputs."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    rows = len(classes if classes is not None else scores)
    width = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
    result = []
    for i in range(rows):
        pairs = []
        for j in range(width):
            label = _text(classes.reshape(rows, -1)[i, j]) if classes is not None else ""
            score = float(scores.reshape(rows, -1)[i, j]) if scores is not None else 0.0
            pairs.append((label, score))
        result.append(pairs)
    return result


def regressions(outputs: dict[str, np.ndarray]) -> list[float]:
    values = outputs["outputs"]
    if values.ndim > 1 and int(np.prod(values.shape[1:])) != 1:
        raise invalid("a regression signature must return one value per example")
    return [float(v) for v in values.reshape(-1)]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
