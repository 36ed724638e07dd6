"""Convolution layers: weights (names, order, shapes, param counts), shapes with free dims,
errors, configs, and outputs cross-checked against Keras."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers, lower
from graphc.ir import dims
from tests.helpers import assert_close


# ---------------------------------------------------------------------------- weights and shapes
@pytest.mark.parametrize("make,in_shape,weights,out_shape", [
    (lambda L: L.Conv1D(32, 7), (None, 500, 128), [("kernel", (7, 128, 32)), ("bias", (32,))], (None, 494, 32)),
    (lambda L: L.Conv2D(8, 3, padding="same", use_bias=False), (None, 7, 7, 3), [("kernel", (3, 3, 3, 8))],
     (None, 7, 7, 8)),
    (lambda L: L.Conv2D(6, (3, 2), strides=2, groups=3), (None, 17, 7, 9),
     [("kernel", (3, 2, 3, 6)), ("bias", (6,))], (None, 8, 3, 6)),
    (lambda L: L.Conv3D(4, 2), (None, 5, 6, 7, 2), [("kernel", (2, 2, 2, 2, 4)), ("bias", (4,))],
     (None, 4, 5, 6, 4)),
    (lambda L: L.DepthwiseConv2D(3, depth_multiplier=2), (None, 7, 7, 3),
     [("kernel", (3, 3, 3, 2)), ("bias", (6,))], (None, 5, 5, 6)),
    (lambda L: L.DepthwiseConv1D(5, padding="same"), (None, 17, 4), [("kernel", (5, 4, 1)), ("bias", (4,))],
     (None, 17, 4)),
    (lambda L: L.SeparableConv2D(16, 3, depth_multiplier=2), (None, 7, 7, 3),
     [("depthwise_kernel", (3, 3, 3, 2)), ("pointwise_kernel", (1, 1, 6, 16)), ("bias", (16,))], (None, 5, 5, 16)),
    (lambda L: L.SeparableConv1D(5, 3, strides=2, use_bias=False), (None, 17, 3),
     [("depthwise_kernel", (3, 3, 1)), ("pointwise_kernel", (1, 3, 5))], (None, 8, 5)),
])
def test_weights_and_output_shapes(make, in_shape, weights, out_shape):
    layer = make(layers)
    y = layer(Input(batch_shape=in_shape))
    assert tuple(y.shape) == out_shape
    assert [(w.name, w.shape) for w in layer.weights] == weights
    assert [w.path.split("/")[0] for w in layer.weights] == [layer.name] * len(weights)
    assert layer.count_params() == sum(int(np.prod(s)) for _, s in weights)


@pytest.mark.keras
@pytest.mark.parametrize("make,in_shape", [
    (lambda L: L.Conv1D(32, 7), (None, 500, 128)),
    (lambda L: L.Conv2D(6, (3, 2), strides=2, groups=3), (None, 17, 7, 9)),
    (lambda L: L.DepthwiseConv2D(3, depth_multiplier=2), (None, 7, 7, 3)),
    (lambda L: L.SeparableConv2D(16, 3, depth_multiplier=2), (None, 7, 7, 3)),
    (lambda L: L.Conv3D(4, 2, use_bias=False), (None, 5, 6, 7, 2)),
])
def test_weight_layout_and_names_match_keras(keras, make, in_shape):
    k, g = make(keras.layers), make(layers)
    k.build(in_shape)
    g(Input(batch_shape=in_shape))
    assert [(w.path, tuple(w.shape)) for w in g.weights] == [(w.path, tuple(w.shape)) for w in k.weights]
    assert g.count_params() == k.count_params()
    assert tuple(g.compute_output_shape(in_shape)) == tuple(k.compute_output_shape(in_shape))


def test_initializers_follow_keras_defaults():
    layer = layers.Conv2D(4, 3)
    layer(Input(shape=(9, 9, 2)))
    fan_in, fan_out = 3 * 3 * 2, 3 * 3 * 4
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert np.abs(layer.kernel.value).max() <= limit and np.abs(layer.kernel.value).max() > limit / 2
    assert (layer.bias.value == 0).all()
    ones = layers.SeparableConv2D(2, 3, depthwise_initializer="ones", pointwise_initializer="zeros",
                                  bias_initializer="ones")
    ones(Input(shape=(5, 5, 3)))
    assert (ones.depthwise_kernel.value == 1).all() and (ones.pointwise_kernel.value == 0).all()
    assert (ones.bias.value == 1).all()


def test_free_sequence_length_conv1d_valid(rng):
    inp = Input(shape=(None, 6))
    y = layers.Conv1D(4, 3, activation="relu")(inp)
    y = layers.Conv1D(2, 3, dilation_rate=2)(y)
    assert tuple(y.shape) == (None, None, 2)
    model = Model(inp, y)
    graph = lower(model)
    steps = graph.type_of(graph.outputs[0]).shape[1]
    assert dims.symbols(steps) == {"input_layer_len"} and dims.evaluate(steps, {"input_layer_len": 20}) == 14
    for n in (7, 12):
        x = rng.standard_normal((2, n, 6)).astype("float32")
        assert model.predict(x).shape == (2, n - 6, 2)


def test_free_size_same_stride_two_matches_fixed_size(rng):
    free, fixed = Input(shape=(None, None, 3)), Input(shape=(9, 7, 3))
    conv = layers.Conv2D(4, 3, strides=2, padding="same")
    sep = layers.SeparableConv2D(2, 3, strides=2, padding="same")
    m_free = Model(free, sep(conv(free)))
    m_fixed = Model(fixed, sep(conv(fixed)))
    assert tuple(m_fixed.output.shape) == (None, 3, 2, 2)
    x = rng.standard_normal((2, 9, 7, 3)).astype("float32")
    assert_close(m_free.predict(x), m_fixed.predict(x))


def test_causal_conv1d(rng):
    layer = layers.Conv1D(2, 3, padding="causal", dilation_rate=2, kernel_initializer="ones", use_bias=False)
    x = np.arange(1, 9, dtype="float32").reshape(1, 8, 1)
    y = layer(x)
    # Output t sums x[t], x[t-2], x[t-4] (zeros before the start).
    want = np.array([x[0, max(t - d, 0), 0] * (t - d >= 0) for t in range(8) for d in (0, 2, 4)]
                    ).reshape(8, 3).sum(axis=1)
    assert_close(y[0, :, 0], want)
    assert_close(y[0, :, 1], want)


def test_depthwise_kernel_alias_and_channel_order():
    layer = layers.DepthwiseConv2D(1, depth_multiplier=2, use_bias=False)
    x = np.arange(1, 4, dtype="float32").reshape(1, 1, 1, 3)
    layer(x)
    assert layer.depthwise_kernel is layer.kernel
    layer.set_weights([np.array([10, 20, 30, 40, 50, 60], dtype="float32").reshape(1, 1, 3, 2)])
    # Output channel c*M + m is input channel c times kernel[c, m].
    assert_close(layer(x).ravel(), [10, 20, 60, 80, 150, 180])


def test_get_config_round_trip(rng):
    layer = layers.Conv2D(4, (3, 1), strides=(2, 1), padding="same", activation="relu", groups=2, name="c")
    config = layer.get_config()
    assert config["kernel_size"] == (3, 1) and config["strides"] == (2, 1) and config["groups"] == 2
    assert config["padding"] == "same" and config["data_format"] == "channels_last"
    assert config["activation"] == "relu" and config["kernel_initializer"]["class_name"] == "GlorotUniform"
    clone = layers.Conv2D.from_config(config)
    x = rng.standard_normal((1, 7, 5, 4)).astype("float32")
    layer(x), clone(x)
    clone.set_weights(layer.get_weights())
    assert_close(clone(x), layer(x))
    for cls, kwargs in [(layers.DepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2}),
                        (layers.SeparableConv1D, {"filters": 3, "kernel_size": 2})]:
        config = cls(**kwargs).get_config()
        assert cls.from_config(config).get_config() == config
    assert layers.Convolution2D is layers.Conv2D and layers.SeparableConvolution2D is layers.SeparableConv2D


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,words", [
    (lambda: layers.DepthwiseConv2D(3, data_format="NCHW"), ["DepthwiseConv2D", "data_format", "'NCHW'"]),
    (lambda: layers.Conv2D(4, 3, data_format="nhwc"), ["data_format", "'nhwc'"]),
    (lambda: layers.Conv2D(4, 3, padding="causal"), ["padding", "'causal'"]),
    (lambda: layers.Conv1D(4, 3, padding="full"), ["padding", "'full'"]),
    (lambda: layers.Conv2D(0, 3), ["filters", "positive"]),
    (lambda: layers.Conv2D(4, (3, 3, 3)), ["kernel_size", "2 integers"]),
    (lambda: layers.Conv2D(4, 0), ["kernel_size", "positive"]),
    (lambda: layers.Conv2D(4, 3, strides=(1, 0)), ["strides", "positive"]),
    (lambda: layers.Conv2D(5, 3, groups=2), ["filters", "groups=2"]),
    (lambda: layers.Conv2D(4, 3, groups=0), ["groups", "positive"]),
    (lambda: layers.Conv2D(4, 3, strides=2, dilation_rate=2), ["strides > 1", "dilation_rate > 1"]),
    (lambda: layers.Conv2D(4, 3, kernel_regularizer="l3"), ["regularizer identifier", "'l3'"]),
    (lambda: layers.Conv2D(4, 3, lora_rank=2), ["lora_rank", "not support"]),
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=0), ["depth_multiplier", "positive"]),
    (lambda: layers.SeparableConv2D(4, 3, pointwise_constraint="positive"), ["constraint identifier", "'positive'"]),
    (lambda: layers.SeparableConv2D(-1, 3), ["filters", "-1"]),
])
def test_constructor_errors(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("layer,in_shape,words", [
    (lambda: layers.Conv2D(4, 3), (None, 28, 28), ["'conv2d'", "rank 4", "(None, 28, 28)"]),
    (lambda: layers.Conv1D(4, 3), (None, 8, 8, 3), ["'conv1d'", "rank 3", "(None, 8, 8, 3)"]),
    (lambda: layers.SeparableConv2D(4, 3), (None, 8, 3), ["'separable_conv2d'", "rank 4"]),
    (lambda: layers.DepthwiseConv2D(3), (None, 8, 8, None), ["channel count", "(None, 8, 8, None)"]),
    (lambda: layers.Conv2D(4, 3), (None, 2, 8, 3), ["'conv2d'", "axis 0 of size 2", "window 3"]),
    (lambda: layers.Conv1D(4, 3, dilation_rate=3), (None, 6, 3), ["axis 0 of size 6", "dilated window 7"]),
    (lambda: layers.Conv2D(4, 3, groups=2), (None, 8, 8, 3), ["channels (3)", "groups=2"]),
])
def test_call_errors_name_layer_and_shape(layer, in_shape, words):
    with pytest.raises(ValueError) as info:
        layer()(Input(batch_shape=in_shape))
    for word in words:
        assert word in str(info.value)


def test_channel_mismatch_after_build_and_int_input():
    conv = layers.Conv2D(4, 3)
    conv(Input(shape=(8, 8, 3)))
    with pytest.raises(ValueError, match="built for inputs with 3 channels"):
        conv(Input(shape=(8, 8, 5)))
    with pytest.raises(ValueError, match="float input, got int32"):
        layers.Conv1D(2, 3)(Input(shape=(8, 3), dtype="int32"))


# ---------------------------------------------------------------------------- Keras cross-checks
def _cross_check(keras, rng, make, shape):
    """Same constructor call in Keras and graphc, Keras's (randomized) weights copied, same output."""
    x = rng.standard_normal(shape).astype("float32")
    k, g = make(keras.layers), make(layers)
    k(x)
    k.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5 for w in k.get_weights()])
    want = keras.ops.convert_to_numpy(k(x))
    g(x)
    g.set_weights(k.get_weights())
    assert_close(g(x), want, rtol=1e-5, atol=1e-5, what=type(g).__name__)


@pytest.mark.keras
@pytest.mark.parametrize("make,shape", [
    (lambda L: L.Conv1D(4, 3), (2, 7, 3)),
    (lambda L: L.Conv1D(4, 4, strides=2, padding="same"), (2, 17, 3)),
    (lambda L: L.Conv1D(3, 3, padding="causal", dilation_rate=2, activation="relu"), (2, 17, 2)),
    (lambda L: L.Conv1D(4, 2, dilation_rate=3, padding="same", groups=2), (1, 7, 4)),
    (lambda L: L.Conv1D(2, 5, strides=3, padding="causal"), (1, 17, 3)),
    (lambda L: L.Conv2D(5, 3), (2, 7, 7, 3)),
    (lambda L: L.Conv2D(5, 3, strides=2, padding="same", activation="tanh"), (2, 7, 7, 3)),
    (lambda L: L.Conv2D(4, (3, 2), strides=(2, 1), padding="same"), (1, 17, 7, 2)),
    (lambda L: L.Conv2D(4, 2, strides=2, padding="same"), (1, 7, 17, 3)),
    (lambda L: L.Conv2D(3, 3, dilation_rate=(2, 1), padding="same"), (1, 7, 7, 2)),
    (lambda L: L.Conv2D(6, 3, groups=3, padding="same", use_bias=False), (1, 7, 7, 6)),
    (lambda L: L.Conv2D(8, 1, strides=2), (2, 7, 7, 4)),
    (lambda L: L.Conv3D(3, (2, 3, 2), strides=(1, 2, 1), padding="same"), (1, 5, 7, 4, 2)),
    (lambda L: L.DepthwiseConv2D(3), (2, 7, 7, 3)),
    (lambda L: L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2), (1, 17, 7, 3)),
    (lambda L: L.DepthwiseConv2D((2, 3), depth_multiplier=3, dilation_rate=2, activation="relu"), (1, 7, 7, 2)),
    (lambda L: L.DepthwiseConv2D(4, strides=2, padding="same", use_bias=False), (1, 7, 7, 3)),
    (lambda L: L.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2), (1, 17, 3)),
    (lambda L: L.SeparableConv2D(4, 3), (2, 7, 7, 3)),
    (lambda L: L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2), (1, 17, 17, 3)),
    (lambda L: L.SeparableConv2D(4, 3, dilation_rate=2, padding="same", activation="relu"), (1, 7, 7, 2)),
    (lambda L: L.SeparableConv1D(3, 4, strides=2, padding="same", depth_multiplier=2), (2, 17, 3)),
])
def test_matches_keras(keras, rng, make, shape):
    _cross_check(keras, rng, make, shape)


@pytest.mark.keras
def test_model_weights_transfer_to_keras(keras, rng):
    def build(L, inp):
        y = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inp)
        y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(y)
        return L.SeparableConv2D(4, 3, activation="relu")(y)

    g_in, k_in = Input(shape=(17, 17, 3)), keras.Input(shape=(17, 17, 3))
    g_model, k_model = Model(g_in, build(layers, g_in)), keras.Model(k_in, build(keras.layers, k_in))
    k_model.set_weights(g_model.get_weights())
    x = rng.standard_normal((2, 17, 17, 3)).astype("float32")
    assert_close(g_model.predict(x), k_model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
