"""One harness for every builder: forward shape, config round trip, save/reload, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasops.models import build_model, get_family


def run_builder_test(
    name: str,
    config: dict[str, Any],
    example: np.ndarray | dict[str, np.ndarray],
    expected_shape: tuple[int, ...] | dict[str, tuple[int, ...]],
    tmp_path: Path,
) -> keras.Model:
    """Check one builder end to end and return the built model.

    - the forward pass gives `expected_shape` and finite values (a model with named outputs
      gives a dict of output name to shape);
    - the typed config survives to_dict/from_dict, and the Keras config rebuilds the model;
    - a `.keras` save and reload predicts the same values;
    - a SavedModel export serves the same values through its `serve` endpoint.

    `example` is one array, or a dict of arrays by input name for a model with named inputs.
    """
    family = get_family(name)
    typed = family.config.from_dict(config)
    assert family.config.from_dict(typed.to_dict()) == typed

    model = build_model(name, typed)
    assert not model.compiled, "builders return uncompiled models"
    predictions = as_arrays(model.predict(example, verbose=0))
    expected = expected_shape if isinstance(expected_shape, dict) else {"": expected_shape}
    assert {k: v.shape for k, v in predictions.items()} == expected
    assert all(np.all(np.isfinite(v)) for v in predictions.values())

    rebuilt = keras.Model.from_config(model.get_config())
    assert rebuilt.count_params() == model.count_params()

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert_same(as_arrays(reloaded.predict(example, verbose=0)), predictions)

    export_dir = tmp_path / f"{name}_savedmodel"
    model.export(str(export_dir), verbose=False)
    loaded = tf.saved_model.load(str(export_dir))
    if isinstance(example, dict):
        served = loaded.serve({k: tf.constant(v) for k, v in example.items()})
    else:
        served = loaded.serve(tf.constant(example))
    assert_same(as_arrays(served), predictions)
    return model


def as_arrays(outputs: Any) -> dict[str, np.ndarray]:
    """Model outputs as {name: array}; a single unnamed output is keyed ''."""
    if isinstance(outputs, dict):
        return {str(k): np.asarray(v) for k, v in outputs.items()}
    return {"": np.asarray(outputs)}


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(actual) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(actual[name], values, atol=1e-5, err_msg=name)
