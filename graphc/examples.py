"""Bundled example models: the seed programs' architectures, built by name.

``graphc.examples.build("inception")`` returns a fresh :class:`~graphc.Model`;
``graphc.examples.inputs("inception", rng, batch=2)`` makes matching random inputs. Each
builder runs only when asked for, so an example whose layers this version of graphc lacks
fails alone, with an :class:`ExampleError` saying which layer is missing.

These are what ``graphc demo``, ``graphc summary NAME`` and ``graphc examples`` use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class ExampleError(ValueError):
    """An unknown example, or one that cannot be built with this version of graphc."""


@dataclass(frozen=True)
class Example:
    """A named architecture: how to build it and how to make inputs for it."""

    name: str
    description: str
    build: Callable[[], Any]
    inputs: Callable[[np.random.Generator, int], Any]


EXAMPLES: dict[str, Example] = {}


def _example(description: str, inputs: Callable[[np.random.Generator, int], Any]):
    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        EXAMPLES[fn.__name__] = Example(fn.__name__, description, fn, inputs)
        return fn
    return register


def _floats(*shape: int):
    return lambda rng, n: rng.random((n, *shape), dtype=np.float32)


# ---------------------------------------------------------------------------------------------


@_example("multilayer perceptron on 64 features, softmax over 10 classes (program 01)", _floats(64))
def mlp():
    from graphc import Input, Model, layers

    inputs = Input(shape=(64,), name="features")
    x = layers.Dense(32, activation="relu")(inputs)
    x = layers.Dense(32, activation="relu")(x)
    return Model(inputs, layers.Dense(10, activation="softmax")(x), name="mlp")


@_example("question answering: two int sequences of free length, Embedding+LSTM each, softmax over 500 "
          "answers (program 02)",
          lambda rng, n: {"text": rng.integers(1, 10000, size=(n, 12)),
                          "question": rng.integers(1, 10000, size=(n, 5))})
def qa_two_inputs():
    from graphc import Input, Model, layers

    text = Input(shape=(None,), dtype="int32", name="text")
    encoded_text = layers.LSTM(32)(layers.Embedding(10000, 64)(text))
    question = Input(shape=(None,), dtype="int32", name="question")
    encoded_question = layers.LSTM(16)(layers.Embedding(10000, 32)(question))
    merged = layers.concatenate([encoded_text, encoded_question], axis=-1)
    answer = layers.Dense(500, activation="softmax")(merged)
    return Model([text, question], answer, name="qa_two_inputs")


@_example("Conv1D text model with three named heads: age, income, gender (program 03)",
          lambda rng, n: rng.integers(1, 50000, size=(n, 300)))
def multi_output():
    from graphc import Input, Model, layers

    posts = Input(shape=(None,), dtype="int32", name="posts")
    x = layers.Embedding(50000, 256)(posts)
    x = layers.Conv1D(128, 5, activation="relu")(x)
    x = layers.MaxPooling1D(5)(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.MaxPooling1D(5)(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(128, activation="relu")(x)
    age = layers.Dense(1, name="age")(x)
    income = layers.Dense(10, activation="softmax", name="income")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender")(x)
    return Model(posts, [age, income, gender], name="multi_output")


@_example("Inception module: four branches of strided 1x1/3x3 convs and pooling, concatenated to "
          "(14, 14, 448) (program 04)", _floats(28, 28, 256))
def inception():
    from graphc import Input, Model, layers

    x = Input(shape=(28, 28, 256), name="image")
    a = layers.Conv2D(64, 1, activation="relu", strides=2)(x)
    b = layers.Conv2D(64, 1, activation="relu")(x)
    b = layers.Conv2D(128, 3, activation="relu", strides=2, padding="same")(b)
    c = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    c = layers.Conv2D(128, 1, activation="relu", padding="same")(c)
    d = layers.Conv2D(128, 1, activation="relu")(x)
    d = layers.Conv2D(128, 3, activation="relu", padding="same")(d)
    d = layers.Conv2D(128, 3, activation="relu", strides=2, padding="same")(d)
    return Model(x, layers.concatenate([a, b, c, d], axis=-1), name="inception")


@_example("residual blocks: an identity shortcut, then a strided 1x1-projection shortcut (program 05)",
          _floats(32, 32, 64))
def residual():
    from graphc import Input, Model, layers

    x = Input(shape=(32, 32, 64), name="image")
    y = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    y = layers.Conv2D(64, 3, activation="relu", padding="same")(y)
    y = layers.add([y, x])
    z = layers.Conv2D(128, 3, activation="relu", padding="same")(y)
    z = layers.MaxPooling2D(2, strides=2)(z)
    shortcut = layers.Conv2D(128, 1, strides=2, padding="same")(y)
    return Model(x, layers.add([z, shortcut]), name="residual")


@_example("siamese LSTM: one LSTM shared by two sequences of free length (program 06)",
          lambda rng, n: [rng.random((n, 6, 128), dtype=np.float32), rng.random((n, 9, 128), dtype=np.float32)])
def siamese_lstm():
    from graphc import Input, Model, layers

    lstm = layers.LSTM(32)
    left = Input(shape=(None, 128), name="left")
    right = Input(shape=(None, 128), name="right")
    merged = layers.concatenate([lstm(left), lstm(right)], axis=-1)
    return Model([left, right], layers.Dense(1, activation="sigmoid")(merged), name="siamese_lstm")


@_example("Xception base shared by two 250x250 views, features concatenated to (8, 8, 4096) (program 07)",
          lambda rng, n: [rng.random((n, 250, 250, 3), dtype=np.float32),
                          rng.random((n, 250, 250, 3), dtype=np.float32)])
def stereo_xception():
    from graphc import Input, Model, applications, layers

    base = applications.Xception(weights=None, include_top=False)
    left = Input(shape=(250, 250, 3), name="left")
    right = Input(shape=(250, 250, 3), name="right")
    merged = layers.concatenate([base(left), base(right)], axis=-1)
    return Model([left, right], merged, name="stereo_xception")


@_example("Sequential stack of SeparableConv2D, pooling, GlobalAveragePooling2D, BatchNormalization "
          "(program 11)", _floats(32, 32, 3))
def separable_conv_bn():
    from graphc import Sequential, layers

    return Sequential([
        layers.SeparableConv2D(32, 3, activation="relu", input_shape=(32, 32, 3)),
        layers.SeparableConv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.SeparableConv2D(64, 3, activation="relu"),
        layers.SeparableConv2D(128, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.SeparableConv2D(64, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(32, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="separable_conv_bn")


@_example("every merge of two vectors: add, subtract, multiply, average, maximum, minimum, concatenate, "
          "dot, cosine (program 12)",
          lambda rng, n: {"a": rng.normal(size=(n, 16)).astype(np.float32),
                          "b": rng.normal(size=(n, 16)).astype(np.float32)})
def merge():
    from graphc import Input, Model, layers

    a = Input(shape=(16,), name="a")
    b = Input(shape=(16,), name="b")
    outputs = [layers.add([a, b]), layers.subtract([a, b]), layers.multiply([a, b]), layers.average([a, b]),
               layers.maximum([a, b]), layers.minimum([a, b]), layers.concatenate([a, b]),
               layers.dot([a, b], axes=1), layers.dot([a, b], axes=1, normalize=True)]
    return Model([a, b], outputs, name="merge")


@_example("Sequential Embedding/Conv1D/MaxPooling1D text classifier on 500 token ids (program 13)",
          lambda rng, n: rng.integers(1, 2000, size=(n, 500)))
def conv1d_text():
    from graphc import Input, Sequential, layers

    return Sequential([
        Input(shape=(500,), name="tokens"),
        layers.Embedding(2000, 128, name="embed"),
        layers.Conv1D(32, 7, activation="relu"),
        layers.MaxPooling1D(5),
        layers.Conv1D(32, 7, activation="relu"),
        layers.GlobalMaxPooling1D(),
        layers.Dense(1),
    ], name="conv1d_text")


# ---------------------------------------------------------------------------------------------


def names() -> list[str]:
    """The bundled examples' names, in the order ``graphc examples`` lists them."""
    return list(EXAMPLES)


def get(name: str) -> Example:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ExampleError(f"unknown example {name!r}; bundled examples are: {', '.join(EXAMPLES)}") from None


def build(name: str, seed: int | None = None):
    """A fresh model of example ``name`` (weights drawn from ``seed`` when given)."""
    example = get(name)
    if seed is not None:
        from graphc.utils import set_random_seed

        set_random_seed(seed)
    try:
        return example.build()
    except AttributeError as exc:
        missing = getattr(exc, "name", None)
        if missing and type(getattr(exc, "obj", None)).__name__ == "module":
            raise ExampleError(f"example {name!r} needs {exc.obj.__name__}.{missing}, which this version of "
                               "graphc does not provide") from exc
        raise


def inputs(name: str, rng: np.random.Generator, batch: int = 2):
    """Random inputs for example ``name``: ``batch`` samples, in the form ``predict`` takes."""
    return get(name).inputs(rng, batch)


__all__ = ["Example", "ExampleError", "EXAMPLES", "names", "get", "build", "inputs"]
