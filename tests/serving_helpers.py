"""Tiny models with role-named inputs and named outputs, for the serving tests."""

from __future__ import annotations

import numpy as np


def digits_cnn(seed: int = 0):  # noqa: ANN201 - keras is imported lazily
    """An 8x8 image classifier: `image` (raw pixels 0..16) -> `probabilities` (10)."""
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Rescaling(1 / 16)(image)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)  # (B, 6, 6, 4)
    x = keras.layers.Flatten()(x)
    probabilities = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="digits_cnn")


def regressor(seed: int = 0):  # noqa: ANN201
    """A tabular regressor: `features` (4) -> `forecast` (1)."""
    import keras

    keras.utils.set_random_seed(seed)
    features = keras.Input((4,), name="features")
    x = keras.layers.Dense(8, activation="relu")(features)
    forecast = keras.layers.Dense(1, name="forecast")(x)
    return keras.Model(features, forecast, name="regressor")


def text_classifier(seed: int = 0):  # noqa: ANN201
    """A text classifier: `text` (one raw string per example) -> `probabilities` (3)."""
    import keras

    keras.utils.set_random_seed(seed)
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(["good movie", "bad film", "great plot twist", "awful acting"])
    text = keras.Input((), dtype="string", name="text")
    x = vectorize(text)  # (B, 4)
    x = keras.layers.Embedding(20, 4)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(text, probabilities, name="text_classifier")


def digit_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 17, (count, 8, 8, 1)).astype("float32")


def probabilities_of(predictions: list) -> np.ndarray:
    """The `probabilities` of REST row-format answers from a classifier: serving_default names
    its classes too, so each row is {"probabilities": [...], "classes": [...]}."""
    return np.asarray([row["probabilities"] for row in predictions], dtype="float32")
