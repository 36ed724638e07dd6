"""Test helpers shared across the suite."""

from __future__ import annotations

import numpy as np


def assert_close(got, want, rtol=1e-5, atol=1e-6, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what} shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def copy_weights_to_keras(graphc_model, keras_model):
    """Give a Keras model the weights of the equivalent graphc model (same order and layout)."""
    keras_model.set_weights(graphc_model.get_weights())
