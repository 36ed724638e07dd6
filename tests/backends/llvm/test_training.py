"""Training steps compiled to native code (graphc.build(model, target="native", training=True))
give the reference's losses, metrics and updated weights."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers


def mlp():
    graphc.utils.set_random_seed(3)
    i = Input(shape=(7,))
    o = layers.Dense(3, activation="softmax")(layers.Dense(17, activation="gelu")(i))
    model = Model(i, o)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def embedding_classifier():
    graphc.utils.set_random_seed(4)
    ids = Input(shape=(None,), dtype="int32")
    x = layers.GlobalAveragePooling1D()(layers.Embedding(30, 8)(ids))
    model = Model(ids, layers.Dense(1, activation="sigmoid")(layers.Dense(5, activation="tanh")(x)))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def convnet():
    graphc.utils.set_random_seed(5)
    x = Input(shape=(9, 8, 3))
    h = layers.Conv2D(6, 3, activation="relu", padding="same")(x)
    h = layers.MaxPooling2D(2)(h)
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.AveragePooling2D(2)(layers.Conv2D(5, 3, strides=2, padding="same")(h))
    model = Model(x, layers.Dense(3, activation="softmax")(layers.Flatten()(h)))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("make", [mlp, embedding_classifier, convnet], ids=["mlp", "embedding", "convnet"])
def test_native_training_steps_match_the_reference(make, rng):
    model, twin = make(), make()
    twin.set_weights(model.get_weights())
    if make is mlp:
        x = rng.normal(size=(6, 7)).astype(np.float32)
        y = graphc.utils.to_categorical(rng.integers(0, 3, size=6), 3)
    elif make is convnet:
        x = rng.normal(size=(6, 9, 8, 3)).astype(np.float32)
        y = graphc.utils.to_categorical(rng.integers(0, 3, size=6), 3)
    else:
        x = rng.integers(0, 30, size=(6, 5)).astype(np.int32)
        y = rng.integers(0, 2, size=(6, 1)).astype(np.float32)
    native = graphc.build(model, target="native", training=True)
    reference = graphc.build(twin, target="reference", training=True)
    for _ in range(3):
        got, want = native.train_step(x, y), reference.train_step(x, y)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
