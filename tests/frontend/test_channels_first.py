"""``data_format="channels_first"`` on every convolution and pooling layer, against Keras: weights,
shapes, every target's predictions at odd sizes, ``keepdims`` on global pooling, .keras files,
a training step, and the optimizer removing the layout transposes between consecutive layers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from tests.keras_parity import check_keras_file, check_predict


@pytest.fixture(autouse=True)
def _fresh_keras_names():
    """Leave Keras's automatic layer names as this module found them (later modules compare weight paths)."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].utils.clear_session(free_memory=False)

CF = "channels_first"


def normal(shape):
    return lambda rng, n: rng.standard_normal((n, *shape)).astype("float32")


# ---------------------------------------------------------------------------- weights and shapes
LAYERS = [
    (lambda L: L.Conv1D(4, 3, strides=2, data_format=CF), (None, 3, 7)),
    (lambda L: L.Conv1D(6, 2, padding="causal", dilation_rate=2, groups=3, data_format=CF), (None, 3, 7)),
    (lambda L: L.Conv2D(5, (3, 1), padding="same", data_format=CF), (None, 2, 7, 3)),
    (lambda L: L.Conv3D(2, 2, data_format=CF), (None, 3, 3, 2, 5)),
    (lambda L: L.DepthwiseConv1D(3, depth_multiplier=2, data_format=CF), (None, 3, 17)),
    (lambda L: L.DepthwiseConv2D(3, strides=2, padding="same", data_format=CF), (None, 5, 7, 3)),
    (lambda L: L.SeparableConv1D(4, 3, data_format=CF), (None, 3, 7)),
    (lambda L: L.SeparableConv2D(4, 2, depth_multiplier=3, data_format=CF), (None, 3, 7, 5)),
    (lambda L: L.Conv2DTranspose(3, 3, strides=2, data_format=CF), (None, 2, 3, 5)),
    (lambda L: L.MaxPooling1D(2, data_format=CF), (None, 3, 7)),
    (lambda L: L.AveragePooling3D(2, padding="same", data_format=CF), (None, 2, 3, 5, 1)),
    (lambda L: L.GlobalMaxPooling2D(data_format=CF, keepdims=True), (None, 3, 7, 5)),
    (lambda L: L.GlobalAveragePooling1D(data_format=CF), (None, 3, None)),
    (lambda L: L.Conv2D(4, 3, data_format=CF), (None, 3, None, None)),
]


@pytest.mark.keras
@pytest.mark.parametrize("make,in_shape", LAYERS)
def test_weights_and_output_shapes_match_keras(keras, make, in_shape):
    keras.utils.clear_session(free_memory=False)
    k, g = make(keras.layers), make(layers)
    k.build(in_shape)
    y = g(Input(batch_shape=in_shape))
    assert [(w.path, tuple(w.shape)) for w in g.weights] == [(w.path, tuple(w.shape)) for w in k.weights]
    assert tuple(y.shape) == tuple(k.compute_output_shape(in_shape))
    assert g.get_config()["data_format"] == CF


# ---------------------------------------------------------------------------- predictions on every target
def _conv1d(K):
    inp = K.Input(shape=(3, 17))
    h = K.layers.Conv1D(6, 3, padding="causal", dilation_rate=2, groups=3, activation="relu", data_format=CF)(inp)
    h = K.layers.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2, data_format=CF)(h)
    h = K.layers.SeparableConv1D(5, 2, activation="tanh", data_format=CF)(h)
    a = K.layers.MaxPooling1D(3, strides=2, padding="same", data_format=CF)(h)
    b = K.layers.AveragePooling1D(2, data_format=CF)(h)
    c = K.layers.GlobalAveragePooling1D(data_format=CF, keepdims=True)(h)
    d = K.layers.GlobalMaxPooling1D(data_format=CF)(h)
    return K.Model(inp, [a, b, c, d])


def _conv2d(K):
    inp = K.Input(shape=(3, 9, 7))
    h = K.layers.Conv2D(4, 3, strides=2, padding="same", activation="elu", data_format=CF)(inp)
    h = K.layers.DepthwiseConv2D((3, 1), depth_multiplier=2, padding="same", data_format=CF)(h)
    h = K.layers.SeparableConv2D(5, 2, dilation_rate=(1, 2), data_format=CF)(h)
    h = K.layers.Conv2D(3, 1, data_format=CF)(h)
    a = K.layers.MaxPooling2D((2, 1), data_format=CF)(h)
    # symmetric 'same' padding (Keras's torch backend averages asymmetric padding differently, see
    # test_pooling_layers.py)
    b = K.layers.AveragePooling2D(3, strides=1, padding="same", data_format=CF)(h)
    c = K.layers.GlobalMaxPooling2D(data_format=CF, keepdims=True)(h)
    d = K.layers.GlobalAveragePooling2D(data_format=CF)(h)
    return K.Model(inp, [a, b, c, d])


def _conv3d(K):
    inp = K.Input(shape=(2, 5, 3, 7))
    h = K.layers.Conv3D(3, (2, 1, 3), strides=(1, 1, 2), padding="same", data_format=CF)(inp)
    h = K.layers.Conv3DTranspose(2, 2, strides=(2, 1, 1), data_format=CF)(h)
    a = K.layers.MaxPooling3D((2, 1, 2), padding="same", data_format=CF)(h)
    b = K.layers.AveragePooling3D(2, strides=1, data_format=CF)(h)
    c = K.layers.GlobalAveragePooling3D(data_format=CF, keepdims=True)(h)
    d = K.layers.GlobalMaxPooling3D(data_format=CF)(h)
    return K.Model(inp, [a, b, c, d])


@pytest.mark.keras
@pytest.mark.parametrize("build,shape", [(_conv1d, (3, 17)), (_conv2d, (3, 9, 7)), (_conv3d, (2, 5, 3, 7))],
                         ids=["1d", "2d", "3d"])
def test_predict_matches_keras_on_every_target(keras, rng, build, shape):
    check_predict(keras, build, normal(shape), rng)


@pytest.mark.keras
def test_free_spatial_sizes_match_keras(keras, rng):
    def build(K):
        inp = K.Input(shape=(3, None, None))
        h = K.layers.Conv2D(4, 3, strides=2, padding="same", data_format=CF)(inp)
        h = K.layers.MaxPooling2D(2, padding="same", data_format=CF)(h)
        return K.Model(inp, K.layers.GlobalAveragePooling2D(data_format=CF)(h))

    def data(rng, n):
        return rng.standard_normal((n, 3, 5 + 2 * n, 11 - 2 * n)).astype("float32")

    check_predict(keras, build, data, rng)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", ["channels_last", CF])
def test_global_pooling_keepdims(rng, keepdims, data_format):
    x = rng.standard_normal((2, 3, 5, 7)).astype("float32")
    axes = (2, 3) if data_format == CF else (1, 2)
    for cls, reduce in ((layers.GlobalAveragePooling2D, np.mean), (layers.GlobalMaxPooling2D, np.max)):
        got = cls(data_format=data_format, keepdims=keepdims)(x)
        want = reduce(x.astype(np.float64), axis=axes, keepdims=keepdims)  # exact, not a float32 sum
        np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------------------- the optimizer
def test_transposes_between_channels_first_layers_are_removed():
    """Each layer transposes to channels-last and back; between layers the pairs compose to nothing."""
    inp = Input(shape=(3, 9, 7))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", data_format=CF)(inp)
    h = layers.DepthwiseConv2D(3, data_format=CF)(h)
    h = layers.MaxPooling2D(2, data_format=CF)(h)
    h = layers.Conv2DTranspose(2, 2, strides=2, data_format=CF)(h)
    model = Model(inp, h)
    count = [sum(op.type == "transpose" for op in graph.ops()) for graph in
             (graphc.lower(model), graphc.optimize(graphc.lower(model), level=1))]
    assert count == [8, 2]


# ---------------------------------------------------------------------------- files, configs, training
@pytest.mark.keras
def test_keras_files_round_trip(keras, rng, tmp_path):
    loaded = check_keras_file(keras, _conv2d, normal((3, 9, 7)), rng, tmp_path)
    formats = {type(layer).__name__: layer.get_config()["data_format"] for layer in loaded.layers[1:]}
    assert set(formats.values()) == {CF} and len(formats) == 7


@pytest.mark.parametrize("make", [
    lambda: layers.Conv1D(2, 3, data_format="Channels_First"),
    lambda: layers.SeparableConv2D(2, 3, data_format=CF),
    lambda: layers.AveragePooling2D(3, data_format=CF),
    lambda: layers.GlobalMaxPooling3D(data_format=CF, keepdims=True),
])
def test_config_round_trip(make):
    layer = make()
    config = layer.get_config()
    assert config["data_format"] == CF
    assert type(layer).from_config(config).get_config() == config


def _trainable(lib):
    inp = lib.Input(shape=(2, 7, 5))
    h = lib.layers.Conv2D(3, 3, padding="same", activation="tanh", data_format=CF)(inp)
    h = lib.layers.SeparableConv2D(4, 2, data_format=CF)(h)
    h = lib.layers.AveragePooling2D(2, padding="same", data_format=CF)(h)
    h = lib.layers.Conv1D(2, 3, data_format=CF)(lib.layers.Reshape((4, -1))(h))
    h = lib.layers.GlobalMaxPooling1D(data_format=CF)(h)
    return lib.Model(inp, lib.layers.Dense(1)(h))


@pytest.mark.keras
def test_training_steps_match_keras(keras, rng):
    g_model, k_model = _trainable(graphc), _trainable(keras)
    k_model.set_weights(g_model.get_weights())
    g_model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.05), loss="mse")
    k_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    for step in range(3):
        x, y = rng.standard_normal((4, 2, 7, 5)).astype("float32"), rng.standard_normal((4, 1)).astype("float32")
        g_loss, k_loss = g_model.train_on_batch(x, y), float(k_model.train_on_batch(x, y))
        assert np.isclose(g_loss, k_loss, rtol=1e-5, atol=1e-6), f"step {step}: loss {g_loss} vs Keras {k_loss}"
        for gw, kw, var in zip(g_model.get_weights(), k_model.get_weights(), g_model.weights):
            np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")


# ---------------------------------------------------------------------------- errors
def test_bad_inputs_name_the_channels_first_layout():
    with pytest.raises(ValueError, match=r"rank 4 \(batch, channels, height, width\)"):
        layers.Conv2D(2, 3, data_format=CF)(Input(shape=(5, 3)))
    with pytest.raises(ValueError, match=r"rank 5 \(batch, channels, depth, height, width\)"):
        layers.MaxPooling3D(data_format=CF)(Input(shape=(5, 3, 2)))
    with pytest.raises(ValueError, match=r"channel count \(axis 1, data_format='channels_first'\)"):
        layers.SeparableConv1D(2, 3, data_format=CF)(Input(shape=(None, 5)))
    conv = layers.DepthwiseConv2D(3, data_format=CF)
    conv(Input(shape=(3, 7, 7)))
    with pytest.raises(ValueError, match="built for inputs with 3 channels"):
        conv(Input(shape=(7, 7, 3)))


@pytest.mark.parametrize("make", [
    lambda: layers.Conv2D(2, 3, data_format="NCHW"),
    lambda: layers.MaxPooling1D(data_format="first"),
    lambda: layers.GlobalAveragePooling3D(data_format=1),
])
def test_unknown_data_format_is_refused(make):
    with pytest.raises(ValueError, match="data_format must be 'channels_last' or 'channels_first'"):
        make()
