"""Regressions found by the random-architecture tester (``test_random_models_vs_keras.py``), each
minimised to the smallest model that showed it and checked against Keras on every target."""

from __future__ import annotations

import numpy as np
import pytest

from tests.keras_parity import check_predict

pytestmark = pytest.mark.keras


def _floats(*shape):
    return lambda rng, n: rng.standard_normal((n, *shape)).astype("float32")


def test_unit_normalization_over_an_axis_of_length_one(keras, rng):
    """Native sumsq over axes of length 1 only copied the input (x / sqrt(x) instead of sign(x))."""
    def build(K):
        x = K.Input((4, 1))
        return K.Model(x, K.layers.UnitNormalization(axis=-1)(x))

    check_predict(keras, build, _floats(4, 1), rng, batches=(1, 3))


def test_dot_normalize_of_length_one_vectors(keras, rng):
    """Dot(normalize=True) of (batch, 1) vectors goes through the same length-1 sum of squares."""
    def build(K):
        a, b = K.Input((1,)), K.Input((1,))
        return K.Model([a, b], K.layers.Dot(axes=-1, normalize=True)([a, b]))

    check_predict(keras, build, lambda rng, n: [_floats(1)(rng, n), _floats(1)(rng, n)], rng, batches=(1, 3))


def test_sum_of_squares_over_length_one_axes_native():
    """The native reduction of kind sumsq/meansq over axes of length 1 squares each element."""
    import graphc

    x = graphc.Input((3, 1))
    out = graphc.layers.LayerNormalization(axis=-1, rms_scaling=True)(graphc.layers.UnitNormalization(axis=-1)(x))
    model = graphc.Model(x, out)
    data = np.random.default_rng(0).standard_normal((2, 3, 1)).astype("float32")
    want = graphc.build(model, target="reference").predict(data)
    np.testing.assert_allclose(graphc.build(model, target="native").predict(data), want, rtol=1e-5, atol=1e-6)
