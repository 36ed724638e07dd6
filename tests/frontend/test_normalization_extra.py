"""LayerNormalization's remaining Keras options (rms_scaling, axis lists, center/scale off),
GroupNormalization and UnitNormalization, against Keras 3 through every target and .keras files."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Sequential, layers
from graphc.frontend.layers import normalization
from tests.keras_parity import check_keras_file, check_predict

pytestmark = pytest.mark.keras


def _normal(*shape, scale=2.0, shift=0.5):
    return lambda rng, n: (scale * rng.standard_normal((n, *shape)) + shift).astype("float32")


def test_new_layers_are_exported():
    for name in ("GroupNormalization", "UnitNormalization"):
        assert name in normalization.__all__ and getattr(layers, name) is getattr(normalization, name)


# ---------------------------------------------------------------- LayerNormalization
# (Keras on torch cannot normalize over leading axes alone: torch's layer_norm takes trailing ones.)
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((3, 7), -1), ((5, 7), [1, 2]), ((3, 5, 7), [-1, 2, 1]),
                                        ((5, 7), [2, 1])])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_layer_norm_options(keras, shape, axis, center, scale, rng):
    def build(K):
        inp = K.Input(shape)
        return K.Model(inp, K.layers.LayerNormalization(axis=axis, center=center, scale=scale, epsilon=0.01)(inp))

    model, kmodel, _ = check_predict(keras, build, _normal(*shape), rng)
    assert [w.name for w in model.weights] == [w.name for w in kmodel.weights]


@pytest.mark.parametrize("shape,axis", [((7,), -1), ((3, 7), -1), ((3, 7), 1), ((3, 5, 7), [1, 2]),
                                        ((3, 5, 7), [-1, 1])])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_layer_norm_rms_scaling(keras, shape, axis, center, scale, rng):
    """Keras's deprecated rms_scaling: x / sqrt(var(x) + epsilon) * gamma, gamma always, beta never."""
    def build(K):
        inp = K.Input(shape)
        with pytest.warns(UserWarning, match="rms_scaling"):
            layer = K.layers.LayerNormalization(axis=axis, center=center, scale=scale, rms_scaling=True)
        return K.Model(inp, layer(inp))

    model, kmodel, _ = check_predict(keras, build, _normal(*shape), rng)
    assert [w.name for w in model.weights] == [w.name for w in kmodel.weights] == ["gamma"]


def test_layer_norm_rms_scaling_formula():
    with pytest.warns(UserWarning):
        layer = layers.LayerNormalization(rms_scaling=True, epsilon=0.5)
    x = np.array([[1.0, 2.0, 6.0]], "float32")
    layer.build(x.shape)
    layer.set_weights([np.array([1.0, 2.0, 3.0], "float32")])
    want = x / np.sqrt(x.var() + 0.5) * [1.0, 2.0, 3.0]
    np.testing.assert_allclose(layer(x), want, rtol=1e-6)


def test_layer_norm_rms_scaling_round_trips_keras_files(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((3, 7))
        with pytest.warns(UserWarning):
            h = K.layers.LayerNormalization(axis=[1, 2], rms_scaling=True)(inp)
        return K.Model(inp, K.layers.LayerNormalization(center=False)(h))

    loaded = check_keras_file(keras, build, _normal(3, 7), rng, tmp_path)
    assert loaded.layers[1].rms_scaling is True and loaded.layers[2].center is False


def test_layer_norm_rms_scaling_trains_like_keras(keras, rng):
    def build(K):
        inp = K.Input((3, 5))
        with pytest.warns(UserWarning):
            h = K.layers.LayerNormalization(rms_scaling=True)(inp)
        return K.Model(inp, K.layers.Dense(2)(h))

    _one_sgd_step(keras, build, (3, 5), (3, 2), rng)


# ---------------------------------------------------------------- GroupNormalization
@pytest.mark.parametrize("shape,groups,axis", [((5, 7, 6), 3, -1), ((5, 7, 6), 1, -1), ((5, 7, 6), -1, -1),
                                               ((17, 9), 3, -1), ((6, 5, 7), 2, 1), ((5, 6, 7), 3, -2),
                                               ((9,), 3, -1)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_group_norm(keras, shape, groups, axis, center, scale, rng):
    def build(K):
        inp = K.Input(shape)
        return K.Model(inp, K.layers.GroupNormalization(groups=groups, axis=axis, center=center, scale=scale)(inp))

    model, kmodel, _ = check_predict(keras, build, _normal(*shape), rng)
    assert [w.name for w in model.weights] == [w.name for w in kmodel.weights]
    assert model.layers[1].groups == kmodel.layers[1].groups  # -1 becomes the channel count in both


def test_group_norm_with_free_spatial_dims(keras, rng):
    def build(K):
        inp = K.Input((None, None, 6))
        h = K.layers.Conv2D(6, 3, padding="same")(inp)
        return K.Model(inp, K.layers.GroupNormalization(groups=2, epsilon=0.01)(h))

    check_predict(keras, build, _normal(5, 7, 6), rng)


def test_group_norm_round_trips_keras_files(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((5, 6))
        h = K.layers.GroupNormalization(groups=-1, center=False)(inp)
        return K.Model(inp, K.layers.GroupNormalization(groups=5, axis=1, epsilon=0.1)(h))

    loaded = check_keras_file(keras, build, _normal(5, 6), rng, tmp_path)
    assert (loaded.layers[1].groups, loaded.layers[1].center) == (6, False)
    assert (loaded.layers[2].groups, loaded.layers[2].axis, loaded.layers[2].epsilon) == (5, 1, 0.1)


def test_group_norm_trains_like_keras(keras, rng):
    def build(K):
        inp = K.Input((4, 6))
        h = K.layers.GroupNormalization(groups=3, gamma_regularizer="l2")(inp)
        return K.Model(inp, K.layers.Dense(2)(h))

    _one_sgd_step(keras, build, (4, 6), (4, 2), rng)


@pytest.mark.parametrize("build,message", [
    (lambda: layers.GroupNormalization(groups=0), "groups must be a positive integer"),
    (lambda: layers.GroupNormalization(groups=2.5), "groups must be a positive integer"),
    (lambda: layers.GroupNormalization(axis=[1]), "axis must be an integer"),
    (lambda: layers.GroupNormalization(epsilon=0), "epsilon must be positive"),
    (lambda: layers.GroupNormalization(groups=4)(Input((5, 6))), "number of channels \\(6\\) must be a multiple"),
    (lambda: layers.GroupNormalization(groups=8)(Input((5, 6))), "groups \\(8\\) cannot be more than"),
    (lambda: layers.GroupNormalization(groups=2)(Input((5, None))), "should have a defined dimension"),
    (lambda: layers.GroupNormalization(groups=2, axis=0)(Input((5, 6))), "non-batch axis"),
    (lambda: layers.GroupNormalization(groups=2, axis=3)(Input((5, 6))), "non-batch axis"),
])
def test_group_norm_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


# ---------------------------------------------------------------- UnitNormalization
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((3, 7), 1), ((3, 5, 7), [1, 2]), ((3, 5, 7), [-1, 1]),
                                        ((1, 17), -1)])
def test_unit_norm(keras, shape, axis, rng):
    def build(K):
        inp = K.Input(shape)
        return K.Model(inp, K.layers.UnitNormalization(axis=axis)(inp))

    check_predict(keras, build, _normal(*shape), rng)


def test_unit_norm_of_zeros_and_tiny_vectors_equals_keras(keras):
    x = np.array([[0.0, 0.0, 0.0], [1e-20, 0.0, -1e-20], [3.0, 4.0, 0.0]], "float32")
    want = keras.ops.convert_to_numpy(keras.layers.UnitNormalization()(x))
    for axis in (-1, [1]):
        model = Sequential([Input((3,)), layers.UnitNormalization(axis=axis)])
        for target in ("reference", "onnx", "native"):
            np.testing.assert_allclose(graphc.build(model, target=target).predict(x), want, rtol=1e-5,
                                       err_msg=f"{axis} {target}")


def test_unit_norm_round_trips_keras_files(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((3, 5))
        return K.Model(inp, K.layers.UnitNormalization(axis=[1, 2])(K.layers.UnitNormalization()(inp)))

    loaded = check_keras_file(keras, build, _normal(3, 5), rng, tmp_path)
    assert loaded.layers[2].axis == [1, 2]


def test_unit_norm_trains_like_keras(keras, rng):
    def build(K):
        inp = K.Input((3, 5))
        h = K.layers.Dense(4)(inp)
        return K.Model(inp, K.layers.Dense(2)(K.layers.UnitNormalization(axis=[1, 2])(h)))

    _one_sgd_step(keras, build, (3, 5), (3, 2), rng)


@pytest.mark.parametrize("build,message", [
    (lambda: layers.UnitNormalization(axis="x"), "axis must be an int or a list of ints"),
    (lambda: layers.UnitNormalization(axis=[]), "non-empty list"),
    (lambda: layers.UnitNormalization(axis=2)(Input((5,))), "axis 2 is out of bounds"),
    (lambda: layers.UnitNormalization(axis=[1, -1])(Input((5,))), "names an axis twice"),
])
def test_unit_norm_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


# ---------------------------------------------------------------- regularizers and constraints
def test_normalization_weight_options_train_like_keras(keras, rng):
    def build(K):
        inp = K.Input((3, 6))
        h = K.layers.LayerNormalization(gamma_regularizer="l2", beta_constraint="non_neg")(inp)
        h = K.layers.BatchNormalization(beta_regularizer=K.regularizers.L1(0.1))(h)
        return K.Model(inp, K.layers.Dense(2)(h))

    _one_sgd_step(keras, build, (3, 6), (3, 2), rng)


def _one_sgd_step(keras, build, x_shape, y_shape, rng):
    """graphc and Keras take one SGD step from the same weights: same loss, same new weights."""
    g_model, k_model = build(graphc), build(keras)
    weights = [rng.standard_normal(w.shape).astype("float32") * 0.5 + (1.0 if "variance" in w.name else 0.0)
               for w in g_model.weights]
    weights = [np.abs(w) if "variance" in v.name else w for w, v in zip(weights, g_model.weights)]
    g_model.set_weights(weights)
    k_model.set_weights(weights)
    for m, lib in ((g_model, graphc), (k_model, keras)):
        m.compile(optimizer=lib.optimizers.SGD(learning_rate=0.1), loss="mse")
    x = _normal(*x_shape)(rng, 4)
    y = rng.standard_normal((4, *y_shape)).astype("float32")
    assert np.isclose(g_model.train_on_batch(x, y), float(k_model.train_on_batch(x, y)), rtol=1e-5)
    for gw, kw, var in zip(g_model.get_weights(), k_model.get_weights(), g_model.weights):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=var.path)
