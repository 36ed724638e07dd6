"""Models built with the front end, exported to ONNX and verified against the reference.

Each model gets random weights, the ONNX checker and shape inference, and two batch sizes
(1 and 3), two sequence lengths where a length is free, optimized and plain exports.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.onnx
from graphc import Input, Model, Sequential, layers
from tests.backends.onnx.checks import assert_verifies, check_model, randomize_weights


def _check(model, make_inputs, rng, sizes=((1, 7), (3, 1))):
    """Export (plain and optimized), check, and verify at each (batch, length) in ``sizes``."""
    randomize_weights(model, rng)
    for optimize in (False, True):
        check_model(graphc.onnx.export(model, optimize=optimize), graphc.onnx.to_graph(model, optimize))
        for batch, length in sizes:
            assert_verifies(model, make_inputs(rng, batch, length), optimize=optimize,
                            what=f"batch {batch}, length {length}")


def floats(*shape):
    return lambda rng, n, t: rng.standard_normal((n, *[t if d is None else d for d in shape])).astype(np.float32)


@pytest.mark.parametrize("activation", ["relu", "relu6", "sigmoid", "tanh", "selu", "elu", "softplus", "softsign",
                                        "swish", "gelu", "hard_sigmoid", "exponential", "softmax", "log_softmax",
                                        "linear"])
def test_dense_activations(activation, rng):
    x = Input(shape=(6,))
    model = Model(x, layers.Dense(5, activation=activation)(layers.Dense(7)(x)))
    _check(model, floats(6), rng)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_embedding_with_free_length(dtype, rng):
    ids = Input(shape=(None,), dtype=dtype, name="ids")
    model = Model(ids, layers.Dense(3)(layers.Embedding(13, 4)(ids)))
    _check(model, lambda rng, n, t: rng.integers(0, 13, size=(n, t)).astype(dtype), rng)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("return_sequences,go_backwards", [(False, False), (True, False), (True, True)])
def test_recurrent_layers(kind, return_sequences, go_backwards, rng):
    x = Input(shape=(None, 5), name="tokens")
    outs = getattr(layers, kind)(4, return_sequences=return_sequences, go_backwards=go_backwards,
                                 return_state=True)(x)
    _check(Model(x, list(outs)), floats(None, 5), rng)


def test_lstm_with_initial_state_and_stacked(rng):
    x = Input(shape=(None, 5))
    h0, c0 = Input(shape=(3,), name="h0"), Input(shape=(3,), name="c0")
    seq = layers.LSTM(3, return_sequences=True)(x, initial_state=[h0, c0])
    out = layers.LSTM(2, go_backwards=True)(seq)
    model = Model([x, h0, c0], out)

    def data(rng, n, t):
        return [rng.standard_normal((n, t, 5)).astype(np.float32),
                rng.standard_normal((n, 3)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32)]

    _check(model, data, rng)


def test_conv2d_family(rng):
    x = Input(shape=(11, 9, 3), name="image")
    a = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    b = layers.Conv2D(4, (2, 3), dilation_rate=2, padding="same")(x)
    b = layers.MaxPooling2D(2, padding="same")(b)
    c = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2)(x)
    d = layers.SeparableConv2D(4, 3, padding="same", strides=2, depth_multiplier=2, activation="relu")(x)
    y = layers.concatenate([a, b, c, d])
    y = layers.BatchNormalization()(y)
    y = layers.AveragePooling2D(3, strides=2, padding="same")(y)
    y = layers.Conv2D(5, 1)(y)
    g = layers.GlobalAveragePooling2D()(y)
    m = layers.GlobalMaxPooling2D()(y)
    out = layers.Dense(2)(layers.Flatten()(y))
    _check(Model(x, [out, g, m]), floats(11, 9, 3), rng)


def test_conv1d_family_with_free_length(rng):
    x = Input(shape=(None, 4), name="signal")
    y = layers.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    y = layers.Conv1D(6, 3, strides=2, padding="same")(y)
    y = layers.MaxPooling1D(2, padding="same")(y)
    y = layers.AveragePooling1D(3, strides=2, padding="same")(y)
    y = layers.SeparableConv1D(5, 3, padding="same")(y)
    out = layers.Dense(2)(layers.GlobalMaxPooling1D()(y))
    _check(Model(x, [out, layers.GlobalAveragePooling1D()(y)]), floats(None, 4), rng, sizes=((1, 9), (3, 2)))


def test_reshape_flatten_layer_norm(rng):
    x = Input(shape=(4, 6))
    y = layers.Reshape((3, 8))(x)
    y = layers.LayerNormalization(axis=[1, 2])(y)
    y = layers.Reshape((-1,))(y)
    y = layers.LayerNormalization()(layers.Dense(5)(y))
    _check(Model(x, y), floats(4, 6), rng)


def test_time_distributed_with_free_length(rng):
    inner = Sequential([Input(shape=(6,)), layers.Dense(4, activation="relu"), layers.Dense(3, activation="softmax")])
    seq = Input(shape=(None, 6), name="frames")
    out = layers.TimeDistributed(inner)(seq)
    model = Model(seq, out)
    graph = graphc.lower(model)
    assert any(isinstance(d, str) and not d.isidentifier() for op in graph.ops() if op.type == "reshape"
               for d in op.attrs["shape"]), "expected a symbolic reshape target"
    _check(model, floats(None, 6), rng)


def test_time_distributed_conv(rng):
    seq = Input(shape=(None, 8, 8, 2))
    y = layers.TimeDistributed(layers.Conv2D(3, 3, padding="same", strides=2))(seq)
    _check(Model(seq, y), floats(None, 8, 8, 2), rng, sizes=((1, 3), (3, 1)))


def test_merge_layers_and_dot(rng):
    a, b = Input(shape=(6,), name="a"), Input(shape=(6,), name="b")
    s = Input(shape=(4, 6), name="s")
    outs = [layers.add([a, b]), layers.subtract([a, b]), layers.multiply([a, b]), layers.average([a, b]),
            layers.maximum([a, b]), layers.minimum([a, b]), layers.concatenate([a, b]),
            layers.dot([a, b], axes=1), layers.dot([a, b], axes=1, normalize=True),
            layers.dot([s, s], axes=2), layers.dot([s, s], axes=(1, 1), normalize=True)]

    def data(rng, n, t):
        return [rng.standard_normal((n, 6)).astype(np.float32), rng.standard_normal((n, 6)).astype(np.float32),
                rng.standard_normal((n, 4, 6)).astype(np.float32)]

    _check(Model([a, b, s], outs), data, rng)


def test_nested_models_and_shared_layers(rng):
    shared = layers.Dense(4, activation="tanh")
    x = Input(shape=(5,))
    inner = Model(x, layers.Dense(3)(shared(x)))
    p, q = Input(shape=(5,), name="p"), Input(shape=(5,), name="q")
    out = layers.concatenate([inner(p), inner(q), shared(q)])
    model = Model([p, q], out)
    proto = graphc.onnx.export(model, optimize=False)
    names = [i.name for i in proto.graph.initializer]
    assert len(names) == len(set(names)) == 4, names  # shared weights exported once
    _check(model, lambda rng, n, t: [rng.standard_normal((n, 5)).astype(np.float32)] * 2, rng)


def test_softmax_on_inner_axis(rng):
    x = Input(shape=(3, 5))
    model = Model(x, layers.Activation("softmax")(layers.Dense(5)(x)))
    graph = graphc.lower(model)
    graph_out = graph.op(graph.producer(graph.outputs[0]).id)
    assert graph_out.type in ("softmax", "identity")
    _check(model, floats(3, 5), rng)
