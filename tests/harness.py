"""One harness for every builder: forward shape, config round trip, save/reload, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import build_model, get_family


def run_builder_test(
    name: str,
    config: dict[str, Any],
    example: np.ndarray | dict[str, np.ndarray],
    expected_shape: tuple[int, ...],
    tmp_path: Path,
) -> keras.Model:
    """Check one builder end to end and return the built model.

    - the forward pass gives `expected_shape` and finite values;
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
    predictions = np.asarray(model.predict(example, verbose=0))
    assert predictions.shape == expected_shape
    assert np.all(np.isfinite(predictions))

    rebuilt = keras.Model.from_config(model.get_config())
    assert rebuilt.count_params() == model.count_params()

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(example, verbose=0), predictions, atol=1e-5)

    export_dir = tmp_path / f"{name}_savedmodel"
    model.export(str(export_dir), verbose=False)
    loaded = tf.saved_model.load(str(export_dir))
    if isinstance(example, dict):
        served = loaded.serve({k: tf.constant(v) for k, v in example.items()})
    else:
        served = loaded.serve(tf.constant(example))
    np.testing.assert_allclose(np.asarray(served), predictions, atol=1e-5)
    return model
