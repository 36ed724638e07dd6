"""Normalization layers: Keras weight lists, moving-statistics inference, errors, Keras cross-checks."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers
from graphc.frontend.layers import normalization
from tests.helpers import assert_close
from tests.ops.test_normalization import bn_formula, ln_formula

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _random_stats(layer, rng):
    """Non-trivial gamma/beta/moving statistics (variances positive)."""
    values = []
    for w in layer.weights:
        if w.name == "moving_variance":
            values.append(rng.uniform(0.2, 3.0, size=w.shape).astype("float32"))
        else:
            values.append(rng.normal(size=w.shape).astype("float32"))
    layer.set_weights(values)


def _keras_numpy(keras, out):
    return keras.ops.convert_to_numpy(out)


def test_all_names_are_exported():
    for name in normalization.__all__:
        assert getattr(layers, name) is getattr(normalization, name)


# ---------------------------------------------------------------- BatchNormalization
@pytest.mark.parametrize("center,scale,names", [
    (True, True, ["gamma", "beta", "moving_mean", "moving_variance"]),
    (False, True, ["gamma", "moving_mean", "moving_variance"]),
    (True, False, ["beta", "moving_mean", "moving_variance"]),
    (False, False, ["moving_mean", "moving_variance"]),
])
def test_batch_norm_weights(center, scale, names):
    bn = layers.BatchNormalization(center=center, scale=scale)
    bn.build((None, 5, 7))
    assert [w.name for w in bn.weights] == names
    assert all(w.shape == (7,) for w in bn.weights)
    assert [w.name for w in bn.trainable_weights] == [n for n in names if not n.startswith("moving")]
    assert [w.name for w in bn.non_trainable_weights] == ["moving_mean", "moving_variance"]
    init = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}
    for w in bn.weights:
        assert_close(w.numpy(), np.full(7, init[w.name]))
    assert bn.count_params() == 7 * len(names)


def test_batch_norm_axis_and_initializers():
    bn = layers.BatchNormalization(axis=1, gamma_initializer="zeros", moving_variance_initializer="ones",
                                   beta_initializer="ones")
    bn.build((None, 3, 8, 8))
    assert bn.gamma.shape == (3,)
    assert_close(bn.gamma.numpy(), np.zeros(3))
    assert_close(bn.beta.numpy(), np.ones(3))


@pytest.mark.parametrize("shape,axis", [((3, 17), -1), ((1, 5), -1), ((3, 4, 5, 7), -1), ((3, 4, 5, 7), 1),
                                        ((2, 3, 5), 1), ((3, 4, 5, 7), 2), ((3, 17), 0)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False), (True, False)])
def test_batch_norm_inference_matches_formula(shape, axis, center, scale, rng):
    bn = layers.BatchNormalization(axis=axis, center=center, scale=scale, epsilon=0.01)
    x = rng.normal(size=shape).astype("float32") * 2 + 1
    bn.build(shape)
    _random_stats(bn, rng)
    c = shape[axis]
    gamma = bn.gamma.numpy() if scale else np.ones(c)
    beta = bn.beta.numpy() if center else np.zeros(c)
    want = bn_formula(x, gamma, beta, bn.moving_mean.numpy(), bn.moving_variance.numpy(), axis % len(shape), 0.01)
    assert_close(bn(x), want, **TOL)
    model = Sequential([Input(shape=shape[1:]), bn]) if axis != 0 else None
    if model is not None:
        assert_close(model.predict(x), want, **TOL)


def test_batch_norm_uses_moving_statistics_whatever_the_batch(rng):
    x_in = Input(shape=(6, 3))
    bn = layers.BatchNormalization()
    model = Model(x_in, bn(layers.Dense(4)(x_in)))
    _random_stats(bn, rng)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    batched = model.predict(x)
    assert_close(model.predict(x[:1]), batched[:1], **TOL)
    h = rng.normal(size=(3, 5, 4)).astype("float32")
    assert_close(bn(h, training=False), bn(h), **TOL)
    assert_close(bn(h[:1]), bn(h)[:1], **TOL)


def test_batch_norm_symbolic_dims_and_ir(rng):
    x_in = Input(shape=(None, 4), name="seq")
    bn = layers.BatchNormalization(name="bn")
    model = Model(x_in, bn(x_in))
    graph = graphc.lower(model)
    graphc.verify(graph)
    (op,) = [op for op in graph.ops() if op.type == "batch_norm"]
    assert op.layer == "bn" and op.attrs["axis"] == -1 and op.attrs["epsilon"] == 1e-3
    assert graph.type_of(op.outputs[0]).shape == ("batch", "seq_len", 4)
    assert [graph.values[v].trainable for v in op.inputs[1:]] == [True, True, False, False]
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    assert model.predict(x).shape == (2, 5, 4)


def test_batch_norm_casts_integer_input(rng):
    bn = layers.BatchNormalization()
    x = rng.integers(-3, 3, size=(4, 5))
    bn.build(x.shape)
    _random_stats(bn, rng)
    want = bn_formula(x.astype("float32"), *[w.numpy() for w in bn.weights], 1, 1e-3)
    assert_close(bn(x), want, **TOL)


@pytest.mark.keras
@pytest.mark.parametrize("shape,axis", [((3, 17), -1), ((3, 17), 1), ((2, 5, 5, 7), -1), ((2, 3, 5, 4), 1),
                                        ((2, 3, 5, 4), 2)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_batch_norm_matches_keras(keras, shape, axis, center, scale, rng):
    kwargs = {"axis": axis, "center": center, "scale": scale, "epsilon": 0.005}
    ours = layers.BatchNormalization(**kwargs)
    ours.build(shape)
    _random_stats(ours, rng)
    theirs = keras.layers.BatchNormalization(**kwargs)
    theirs.build(shape)
    assert [(w.name, tuple(w.shape), w.trainable) for w in theirs.weights] == \
        [(w.name, w.shape, w.trainable) for w in ours.weights]
    theirs.set_weights(ours.get_weights())
    x = (rng.normal(size=shape) * 3 - 1).astype("float32")
    assert_close(ours(x), _keras_numpy(keras, theirs(x, training=False)), **TOL)


@pytest.mark.keras
def test_batch_norm_model_and_config_match_keras(keras, rng):
    def build(lib):
        x = lib.Input(shape=(6, 6, 3))
        y = lib.layers.Conv2D(4, 3)(x)
        y = lib.layers.BatchNormalization(momentum=0.9)(y)
        y = lib.layers.Flatten()(y)
        return lib.Model(x, lib.layers.BatchNormalization(center=False)(lib.layers.Dense(5)(y)))

    ours, theirs = build(graphc), build(keras)
    for layer in ours.layers:
        if isinstance(layer, layers.BatchNormalization):
            _random_stats(layer, rng)
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    theirs.set_weights(ours.get_weights())
    x = rng.normal(size=(3, 6, 6, 3)).astype("float32")
    assert_close(ours.predict(x), theirs.predict(x, verbose=0), **TOL)
    ours_cfg = layers.BatchNormalization(axis=1, momentum=0.9, center=False).get_config()
    theirs_cfg = keras.layers.BatchNormalization(axis=1, momentum=0.9, center=False).get_config()
    for key in ("axis", "momentum", "epsilon", "center", "scale", "synchronized", "renorm"):
        assert ours_cfg[key] == theirs_cfg[key], key
    assert set(ours_cfg) - {"batch_input_shape"} <= set(theirs_cfg)
    assert layers.BatchNormalization.from_config(ours_cfg).get_config() == ours_cfg


@pytest.mark.parametrize("build,message", [
    (lambda: layers.BatchNormalization(axis=2, name="bn")(Input(shape=(5,))),
     "'bn'.*axis 2 is out of bounds for input shape \\(None, 5\\)"),
    (lambda: layers.BatchNormalization(name="bn2")(Input(shape=(None,))),
     "'bn2'.*axis -1 of the input must have a known size"),
    (lambda: layers.BatchNormalization(axis=3).build((None, 4)), "axis 3 is out of bounds"),
    (lambda: layers.BatchNormalization(axis=1.5), "axis must be an integer"),
    (lambda: layers.BatchNormalization(epsilon=0), "epsilon must be positive"),
    (lambda: layers.BatchNormalization(renorm=True), "renorm=True is not supported"),
    (lambda: layers.BatchNormalization(synchronized=True), "synchronized=True"),
    (lambda: layers.BatchNormalization()(Input(shape=(4,)), mask=Input(shape=(4,))), "one dimension less"),
])
def test_batch_norm_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


# ---------------------------------------------------------------- LayerNormalization
@pytest.mark.parametrize("shape,axis", [((3, 17), -1), ((1, 1), -1), ((3, 7, 5), -1), ((3, 7, 5), 1),
                                        ((3, 7, 5), [1, 2]), ((2, 3, 4, 5), [-1, 1])])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_layer_norm_matches_formula(shape, axis, center, scale, rng):
    ln = layers.LayerNormalization(axis=axis, center=center, scale=scale)
    x = (rng.normal(size=shape) * 2 + 3).astype("float32")
    ln.build(shape)
    _random_stats(ln, rng)
    axes = axis if isinstance(axis, list) else [axis]
    op_shape = tuple(shape[a] for a in sorted(a % len(shape) for a in axes))
    # Weights keep Keras's shape; the op sees them reshaped (row-major) onto the sorted axes.
    gamma = ln.gamma.numpy().reshape(op_shape) if scale else np.ones(op_shape)
    beta = ln.beta.numpy().reshape(op_shape) if center else np.zeros(op_shape)
    assert_close(ln(x), ln_formula(x, gamma, beta, axes, 1e-3), **TOL)
    assert [w.name for w in ln.weights] == ["gamma"] * scale + ["beta"] * center


@pytest.mark.keras
# Keras's torch backend cannot normalize a single inner axis (axis=1 of a 3-D input); the
# formula test above covers that case.
@pytest.mark.parametrize("shape,axis", [((3, 17), -1), ((3, 7, 5), -1), ((3, 7, 5), [1, 2]),
                                        ((2, 3, 4, 5), [-1, 1]), ((2, 3, 4, 5), [1, 3])])
@pytest.mark.parametrize("center,scale", [(True, True), (True, False), (False, True)])
def test_layer_norm_matches_keras(keras, shape, axis, center, scale, rng):
    kwargs = {"axis": axis, "center": center, "scale": scale, "epsilon": 1e-4}
    ours = layers.LayerNormalization(**kwargs)
    ours.build(shape)
    _random_stats(ours, rng)
    theirs = keras.layers.LayerNormalization(**kwargs)
    theirs.build(shape)
    assert [(w.name, tuple(w.shape)) for w in theirs.weights] == [(w.name, w.shape) for w in ours.weights]
    theirs.set_weights(ours.get_weights())
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    assert_close(ours(x), _keras_numpy(keras, theirs(x)), **TOL)
    ours_cfg, theirs_cfg = ours.get_config(), theirs.get_config()
    for key in ("axis", "epsilon", "center", "scale", "rms_scaling"):
        assert ours_cfg[key] == theirs_cfg[key], key


def test_layer_norm_in_a_model_with_free_dims(rng):
    x_in = Input(shape=(None, 6))
    ln = layers.LayerNormalization()
    model = Model(x_in, ln(x_in))
    _random_stats(ln, rng)
    x = rng.normal(size=(2, 9, 6)).astype("float32")
    assert_close(model.predict(x), ln_formula(x, ln.gamma.numpy(), ln.beta.numpy(), [-1], 1e-3), **TOL)


@pytest.mark.parametrize("build,message", [
    (lambda: layers.LayerNormalization(axis=3, name="ln")(Input(shape=(5,))),
     "'ln'.*axis 3 is out of bounds for input shape \\(None, 5\\)"),
    (lambda: layers.LayerNormalization(axis=1)(Input(shape=(None, 4))), "axis 1 of the input must have a known"),
    (lambda: layers.LayerNormalization(axis=[1, -1])(Input(shape=(4,))), "names an axis twice"),
    (lambda: layers.LayerNormalization(axis="x"), "axis must be an int or a list of ints"),
    (lambda: layers.LayerNormalization(axis=[]), "non-empty list"),
    (lambda: layers.LayerNormalization(epsilon=-1), "epsilon must be positive"),
    (lambda: layers.LayerNormalization().build((None, None)), "known size"),
])
def test_layer_norm_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()
