"""Initializers: Keras's names, fans, distributions and seeding."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import layers, utils
from graphc.frontend import initializers


def test_fans_match_keras_rules():
    assert initializers.compute_fans((7,)) == (7, 7)
    assert initializers.compute_fans((3, 17)) == (3, 17)
    assert initializers.compute_fans((3, 3, 8, 16)) == (72, 144)
    assert initializers.compute_fans((5, 4, 6)) == (20, 30)


def test_glorot_uniform_limit_and_spread():
    w = initializers.get("glorot_uniform")((300, 500))
    limit = np.sqrt(6.0 / 800)
    assert w.dtype == np.float32 and w.shape == (300, 500)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    assert abs(w.std() - limit / np.sqrt(3)) < 0.01 * limit


def test_orthogonal_is_orthogonal_for_both_aspect_ratios():
    for shape in [(17, 17), (8, 32), (32, 8)]:
        q = initializers.get("orthogonal")(shape).astype(np.float64)
        if shape[0] >= shape[1]:
            np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), atol=1e-5)
        else:
            np.testing.assert_allclose(q @ q.T, np.eye(shape[0]), atol=1e-5)


def test_truncated_normal_stays_within_two_stddevs():
    w = initializers.TruncatedNormal(stddev=0.5, seed=3)((100, 100))
    assert np.abs(w).max() <= 1.0


def test_he_normal_and_lecun_scale():
    he = initializers.get("he_normal")((400, 400))
    lecun = initializers.get("lecun_uniform")((400, 400))
    assert abs(he.std() - np.sqrt(2 / 400)) < 0.1 * np.sqrt(2 / 400)
    assert np.abs(lecun).max() <= np.sqrt(3 / 400)


def test_lookup_by_name_class_config_and_errors():
    assert isinstance(initializers.get("GlorotUniform"), initializers.GlorotUniform)
    init = initializers.get({"class_name": "RandomUniform", "config": {"minval": 1.0, "maxval": 2.0}})
    w = init((50,))
    assert (w >= 1.0).all() and (w <= 2.0).all()
    assert initializers.serialize(init)["config"]["minval"] == 1.0
    with pytest.raises(ValueError, match="unknown initializer 'nope'"):
        initializers.get("nope")
    with pytest.raises(ValueError, match="invalid mode"):
        initializers.VarianceScaling(mode="fan_sideways")


def test_layer_defaults_match_keras():
    dense = layers.Dense(3)
    dense.build((None, 5))
    assert (dense.bias.value == 0).all()
    emb = layers.Embedding(7, 3)
    emb.build((None, 4))
    assert np.abs(emb.embeddings.value).max() <= 0.05


def test_set_random_seed_makes_initialization_reproducible():
    utils.set_random_seed(42)
    a = layers.Dense(17)
    a.build((None, 7))
    utils.set_random_seed(42)
    b = layers.Dense(17)
    b.build((None, 7))
    np.testing.assert_array_equal(a.kernel.value, b.kernel.value)
    c = layers.Dense(17)
    c.build((None, 7))
    assert not np.array_equal(b.kernel.value, c.kernel.value)


def test_seeded_initializer_is_deterministic():
    a = initializers.GlorotUniform(seed=7)((3, 3))
    b = initializers.GlorotUniform(seed=7)((3, 3))
    np.testing.assert_array_equal(a, b)


def test_to_categorical():
    y = utils.to_categorical([0, 2, 1], 3)
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[[0, 2, 1]])
    assert utils.to_categorical(np.array([[1], [0]])).shape == (2, 2)
    with pytest.raises(ValueError, match="out of range"):
        utils.to_categorical([5], 3)


def test_direct_build_marks_the_layer_built_and_keeps_loaded_weights():
    dense = layers.Dense(3)
    dense.build((None, 4))
    assert dense.built
    dense.set_weights([np.ones((4, 3), np.float32), np.zeros(3, np.float32)])
    np.testing.assert_allclose(dense(np.ones((1, 4), np.float32)), [[4.0, 4.0, 4.0]])
    assert len(dense.weights) == 2
