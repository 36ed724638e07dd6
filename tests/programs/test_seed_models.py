"""Every seed architecture: graphc vs Keras 3 with the same (randomized) weights.

The same builder code (tests/programs/seed_models.py) makes the graphc model and its Keras
twin; graphc's weights, perturbed so that biases and BatchNorm statistics are not trivial,
are copied into Keras, and both predict the same random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from tests.programs.seed_models import SEED_MODELS


def randomize(model, rng):
    """Non-trivial weights of the right shapes (positive variances for BatchNorm)."""
    new = []
    for var in model.weights:
        if var.name == "moving_variance":
            new.append(rng.uniform(0.5, 1.5, size=var.shape).astype(np.float32))
        elif var.name == "embeddings":
            new.append(rng.normal(0, 0.5, size=var.shape).astype(np.float32))
        else:
            scale = 1.0 / np.sqrt(max(1, int(np.prod(var.shape[:-1]))))
            new.append(rng.normal(0, scale, size=var.shape).astype(np.float32))
    model.set_weights(new)


# Keras 3.15's torch backend counts the replicated edge in 'same' average pooling with
# asymmetric padding (keras-team/keras#18452); graphc excludes padding as TensorFlow, JAX and
# onnxruntime do (checked against onnxruntime in tests/ops/test_pool.py). For the Inception
# module, whose average-pooling branch has such padding, the last row and column (the only
# windows touching the padding) are compared separately for the other branches.
KERAS_POOL_EDGE_BUG = {"inception": slice(192, 320)}


def as_list(out):
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_param_count_and_predict_shapes(name, rng):
    builder, params, lengths = SEED_MODELS[name]
    model, data = builder(graphc)
    if params is not None:
        assert model.count_params() == params
    for n in (1, 3):
        args = (rng, n) if lengths is None else (rng, n, lengths[0])
        outs = as_list(model.predict(data(*args)))
        assert all(o.shape[0] == n for o in outs)
        assert all(np.isfinite(o).all() for o in outs)


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_matches_keras(name, keras, rng):
    builder, _, lengths = SEED_MODELS[name]
    model, data = builder(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel, _ = builder(keras)
    assert [w.shape for w in model.weights] == [tuple(w.shape) for w in kmodel.weights]
    randomize(model, rng)
    kmodel.set_weights(model.get_weights())
    for n, t in [(2, None), (3, None)] if lengths is None else [(2, lengths[0]), (3, lengths[1])]:
        x = data(rng, n) if t is None else data(rng, n, t)
        got = as_list(model.predict(x))
        want = as_list(kmodel.predict(x, verbose=0))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            w = np.asarray(w)
            if name in KERAS_POOL_EDGE_BUG:
                pool_channels = KERAS_POOL_EDGE_BUG[name]
                np.testing.assert_allclose(g[:, :-1, :-1], w[:, :-1, :-1], rtol=1e-4, atol=1e-5)
                g, w = np.delete(g, np.r_[pool_channels], axis=-1), np.delete(w, np.r_[pool_channels], axis=-1)
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name} n={n} t={t}")
