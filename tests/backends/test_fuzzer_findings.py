"""Two defects a random-model fuzzer found against Keras, kept as regression tests through every
target at levels 0 and 2:

- ONNX export of 'same' max pooling whose stride exceeds the window, on a free length: the
  'same' pad total goes negative (Keras clamps it at 0), and onnxruntime refused the negative pad
  that SAME_UPPER computes ("padding values must be non-negative");
- native code at level 0 refused depthwise and separable convolutions of a one-channel input
  (a kernel reshaped at run time: "convolution with a kernel computed at run time").
"""

from __future__ import annotations

import pytest

from tests.keras_parity import check_predict


def _sequence(length: int, channels: int):
    return lambda rng, n: rng.standard_normal((n, length, channels)).astype("float32")


def _image(h: int, w: int, channels: int):
    return lambda rng, n: rng.standard_normal((n, h, w, channels)).astype("float32")


@pytest.mark.keras
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("layer, pool, strides, length", [("MaxPooling1D", 2, 3, 9), ("MaxPooling1D", 2, 3, 7),
                                                          ("MaxPooling1D", 1, 4, 11), ("AveragePooling1D", 2, 3, 9),
                                                          ("MaxPooling1D", 3, 3, 10)])
def test_same_pooling_with_strides_beyond_the_window_on_a_free_length(keras, rng, level, layer, pool, strides,
                                                                      length):
    def build(K):
        x = K.Input((None, 6))
        return K.Model(x, getattr(K.layers, layer)(pool_size=pool, strides=strides, padding="same")(x))

    check_predict(keras, build, _sequence(length, 6), rng, level=level)


@pytest.mark.keras
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("layer", ["MaxPooling2D", "AveragePooling2D"])
def test_same_2d_pooling_with_strides_beyond_the_window_on_free_sizes(keras, rng, level, layer):
    def build(K):
        x = K.Input((None, None, 3))
        return K.Model(x, getattr(K.layers, layer)(pool_size=(2, 1), strides=(3, 2), padding="same")(x))

    for h, w in ((9, 7), (8, 5)):
        check_predict(keras, build, _image(h, w, 3), rng, level=level)


@pytest.mark.keras
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("make", [
    lambda K: K.layers.DepthwiseConv2D(3),
    lambda K: K.layers.DepthwiseConv2D(3, depth_multiplier=4, padding="same", strides=2),
    lambda K: K.layers.SeparableConv2D(5, 3),
    lambda K: K.layers.SeparableConv2D(4, (2, 3), depth_multiplier=2, padding="same"),
    lambda K: K.layers.DepthwiseConv1D(3, depth_multiplier=2),
    lambda K: K.layers.SeparableConv1D(3, 2, strides=2),
], ids=["depthwise2d", "depthwise2d_mult4_same_s2", "separable2d", "separable2d_mult2_same", "depthwise1d",
        "separable1d"])
def test_depthwise_and_separable_on_one_channel(keras, rng, level, make):
    def build(K):
        x = K.Input((11, 7, 1)) if "2D" in type(make(K)).__name__ else K.Input((11, 1))
        return K.Model(x, make(K)(x))

    def data(rng, n):
        shape = (n, 11, 7, 1) if "2D" in type(make(keras)).__name__ else (n, 11, 1)
        return rng.standard_normal(shape).astype("float32")

    check_predict(keras, build, data, rng, level=level)
