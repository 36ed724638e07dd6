"""Pooling layers: defaults, shapes with free dims, errors, configs, and outputs cross-checked
against Keras."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers
from tests.helpers import assert_close


def test_defaults_and_config():
    assert layers.MaxPooling1D().pool_size == (2,) and layers.MaxPooling2D().pool_size == (2, 2)
    assert layers.MaxPooling3D().strides == (2, 2, 2)
    pool = layers.AveragePooling2D(3, padding="SAME")
    assert pool.strides == (3, 3) and pool.padding == "same"
    config = layers.MaxPooling2D((2, 3), strides=1).get_config()
    assert config["pool_size"] == (2, 3) and config["strides"] == (1, 1) and config["padding"] == "valid"
    assert config["data_format"] == "channels_last"
    assert layers.MaxPooling2D.from_config(config).get_config() == config
    gconfig = layers.GlobalAveragePooling2D(keepdims=True).get_config()
    assert gconfig["keepdims"] is True and layers.GlobalAveragePooling2D.from_config(gconfig).keepdims
    assert layers.MaxPool2D is layers.MaxPooling2D and layers.GlobalAvgPool1D is layers.GlobalAveragePooling1D
    with pytest.raises(TypeError):
        layers.AveragePooling2D()  # pool_size has no default, as in Keras


@pytest.mark.parametrize("make,in_shape,out_shape", [
    (lambda: layers.MaxPooling1D(5), (None, 494, 32), (None, 98, 32)),
    (lambda: layers.MaxPooling1D(2, strides=1, padding="same"), (None, None, 3), (None, None, 3)),
    (lambda: layers.MaxPooling2D(2, strides=2), (None, 32, 32, 128), (None, 16, 16, 128)),
    (lambda: layers.AveragePooling2D(3, strides=2, padding="same"), (None, 28, 28, 256), (None, 14, 14, 256)),
    (lambda: layers.AveragePooling2D((3, 2)), (None, 7, 17, 1), (None, 2, 8, 1)),
    (lambda: layers.AveragePooling3D(2, padding="same"), (None, 5, 6, 7, 2), (None, 3, 3, 4, 2)),
    (lambda: layers.GlobalMaxPooling1D(), (None, None, 32), (None, 32)),
    (lambda: layers.GlobalAveragePooling2D(keepdims=True), (None, 7, 7, 4), (None, 1, 1, 4)),
    (lambda: layers.GlobalMaxPooling3D(), (None, 2, 3, 4, 5), (None, 5)),
])
def test_output_shapes(make, in_shape, out_shape):
    layer = make()
    assert tuple(layer(Input(batch_shape=in_shape)).shape) == out_shape
    assert layer.weights == [] and layer.count_params() == 0


def test_free_length_same_stride_pooling_runs(rng):
    inp = Input(shape=(None, 2))
    out = layers.AveragePooling1D(3, strides=2, padding="same")(layers.MaxPooling1D(2, padding="same")(inp))
    model = Model(inp, out)
    for n in (5, 8, 9):
        x = rng.standard_normal((1, n, 2)).astype("float32")
        fixed = Input(shape=(n, 2))
        ref = Model(fixed, layers.AveragePooling1D(3, strides=2, padding="same")(
            layers.MaxPooling1D(2, padding="same")(fixed)))
        assert_close(model.predict(x), ref.predict(x))


def test_average_pooling_same_leaves_padding_out():
    x = np.arange(1, 7, dtype="float32").reshape(1, 6, 1)
    assert_close(layers.AveragePooling1D(3, strides=2, padding="same")(x).ravel(), [2.0, 4.0, 5.5])


def test_max_pooling_same_on_negative_inputs(rng):
    x = -1 - rng.random((1, 5, 5, 2)).astype("float32")
    y = layers.MaxPooling2D(2, padding="same")(x)
    assert y.shape == (1, 3, 3, 2) and (y < -1).all()


@pytest.mark.parametrize("make,kwargs,words", [
    (layers.MaxPooling2D, {"data_format": "NCHW"}, ["MaxPooling2D", "data_format", "'NCHW'"]),
    (layers.AveragePooling1D, {"pool_size": 2, "padding": "causal"}, ["padding", "'causal'"]),
    (layers.MaxPooling2D, {"pool_size": (2, 2, 2)}, ["pool_size", "2 integers"]),
    (layers.MaxPooling1D, {"strides": 0}, ["strides", "positive"]),
    (layers.GlobalAveragePooling2D, {"data_format": "first"}, ["data_format", "'first'"]),
])
def test_constructor_errors(make, kwargs, words):
    with pytest.raises(ValueError) as info:
        make(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("layer,in_shape,dtype,words", [
    (lambda: layers.MaxPooling2D(), (None, 28, 28), "float32", ["'max_pooling2d'", "rank 4", "(None, 28, 28)"]),
    (lambda: layers.AveragePooling1D(2), (None, 4, 4, 3), "float32", ["'average_pooling1d'", "rank 3"]),
    (lambda: layers.MaxPooling2D(3), (None, 2, 8, 3), "float32", ["'max_pooling2d'", "size 2", "window 3"]),
    (lambda: layers.AveragePooling2D(2), (None, 4, 4, 3), "int32", ["float input", "int32"]),
    (lambda: layers.GlobalMaxPooling2D(), (None, 8, 3), "float32", ["'global_max_pooling2d'", "rank 4"]),
    (lambda: layers.GlobalAveragePooling1D(), (None, 8, 3), "int32", ["float input"]),
])
def test_call_errors_name_layer_and_shape(layer, in_shape, dtype, words):
    with pytest.raises(ValueError) as info:
        layer()(Input(batch_shape=in_shape, dtype=dtype))
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------------------- Keras cross-checks
@pytest.mark.keras
@pytest.mark.parametrize("make,shape", [
    (lambda L: L.MaxPooling1D(), (2, 7, 3)),
    (lambda L: L.MaxPooling1D(3, strides=2, padding="same"), (2, 17, 3)),
    (lambda L: L.MaxPooling1D(4, strides=3, padding="same"), (1, 17, 2)),
    (lambda L: L.MaxPooling2D(), (2, 7, 7, 3)),
    (lambda L: L.MaxPooling2D(2, padding="same"), (1, 7, 17, 2)),
    (lambda L: L.MaxPooling2D(3, strides=2, padding="same"), (1, 17, 7, 2)),
    (lambda L: L.MaxPooling2D((3, 2), strides=(1, 2)), (1, 7, 7, 2)),
    (lambda L: L.MaxPooling3D(2, padding="same"), (1, 5, 6, 7, 2)),
    (lambda L: L.AveragePooling1D(3), (2, 17, 3)),
    (lambda L: L.AveragePooling1D(3, strides=2, padding="same"), (1, 17, 2)),
    (lambda L: L.AveragePooling2D(2), (2, 7, 7, 3)),
    (lambda L: L.AveragePooling2D(2, padding="same"), (1, 7, 17, 2)),
    (lambda L: L.AveragePooling2D(3, strides=2, padding="same"), (1, 7, 17, 2)),
    (lambda L: L.AveragePooling2D(3, strides=1, padding="same"), (1, 7, 7, 3)),
    (lambda L: L.AveragePooling2D((3, 2), strides=(2, 1)), (1, 17, 7, 2)),
    (lambda L: L.AveragePooling3D((2, 1, 2)), (1, 5, 6, 7, 2)),
    (lambda L: L.GlobalMaxPooling1D(), (2, 7, 3)),
    (lambda L: L.GlobalAveragePooling1D(keepdims=True), (2, 17, 3)),
    (lambda L: L.GlobalMaxPooling2D(keepdims=True), (2, 7, 7, 3)),
    (lambda L: L.GlobalAveragePooling2D(), (2, 7, 17, 3)),
    (lambda L: L.GlobalAveragePooling3D(), (1, 3, 4, 5, 2)),
])
def test_matches_keras(keras, rng, make, shape):
    x = rng.standard_normal(shape).astype("float32")
    want = keras.ops.convert_to_numpy(make(keras.layers)(x))
    assert_close(make(layers)(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.keras
def test_average_pooling_asymmetric_same_padding(keras, rng):
    """Where 'same' padding is asymmetric and the window is wider than 2, Keras's torch backend
    replicates edge values into the padding and averages them; graphc leaves the padding out of
    the count, as Keras's TensorFlow and JAX backends (and ONNX) do. Both agree on the windows
    that do not touch the padding."""
    x = rng.standard_normal((1, 8, 8, 2)).astype("float32")
    got = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    keras_torch = keras.ops.convert_to_numpy(keras.layers.AveragePooling2D(3, strides=2, padding="same")(x))
    assert_close(got[:, :3, :3], keras_torch[:, :3, :3], rtol=1e-5, atol=1e-6)
    # Output row 3 covers rows 6, 7 and one padded row; output column 0 covers columns 0 to 2.
    assert_close(got[0, 3, 0], x[0, 6:8, 0:3].mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
