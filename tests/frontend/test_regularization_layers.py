"""SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout, AlphaDropout, ActivityRegularization
and the ``random_normal_like`` op they draw from.

At inference each layer is the identity: compared with Keras on every target and through
``.keras`` files. In training the draws are random, so the tests check what is certain (every
output element is one of the values Keras's formula allows, masks shared where Keras shares
them, scale factors exact) and what is statistical (fractions, means and variances over large
tensors), on the reference interpreter and in native code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm import build_native
from graphc.backends.llvm.kernels.random import normal_reference
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.ops.registry import get
from tests.keras_parity import check_keras_file, check_predict

ALPHA_P = np.float32(-1.6732632423543772848170429916717 * 1.0507009873554804934193349852946)


def _native_training_forward(layer, shape):
    """The layer alone, lowered in training mode and compiled to native code."""
    inp = Input(shape=shape[1:])
    model = Model(inp, layer(inp))
    return build_native(graphc.lower(model, training=True))


def _forwards(layer, x):
    """The layer's training-mode output on the reference interpreter and in native code."""
    native = _native_training_forward(layer, x.shape)
    return {"reference": layer(x, training=True), "native": native.predict(x)}


# ---------------------------------------------------------------------------- inference: the identity
def _seq(rng, n):
    return rng.standard_normal((n, 7, 5)).astype("float32")


def _img(rng, n):
    return rng.standard_normal((n, 5, 3, 4)).astype("float32")


def _vol(rng, n):
    return rng.standard_normal((n, 3, 4, 2, 3)).astype("float32")


INFERENCE_CASES = [
    ("spatial1d", lambda K: K.layers.SpatialDropout1D(0.4, seed=3), (7, 5), _seq),
    ("spatial2d", lambda K: K.layers.SpatialDropout2D(0.3), (5, 3, 4), _img),
    ("spatial2d_first", lambda K: K.layers.SpatialDropout2D(0.3, data_format="channels_first"), (5, 3, 4), _img),
    ("spatial3d", lambda K: K.layers.SpatialDropout3D(0.2, seed=1), (3, 4, 2, 3), _vol),
    ("gaussian_noise", lambda K: K.layers.GaussianNoise(0.7, seed=2), (7, 5), _seq),
    ("gaussian_dropout", lambda K: K.layers.GaussianDropout(0.25), (7, 5), _seq),
    ("alpha_dropout", lambda K: K.layers.AlphaDropout(0.1, noise_shape=(None, 1, 5)), (7, 5), _seq),
    ("activity_regularization", lambda K: K.layers.ActivityRegularization(l1=0.01, l2=0.2), (5, 3, 4), _img),
]


def _between_dense(make, shape):
    def build(K):
        inp = K.Input(shape=shape)
        h = K.layers.Dense(shape[-1], activation="tanh")(inp)
        return K.Model(inp, K.layers.Dense(3)(make(K)(h)))

    return build


@pytest.mark.keras
@pytest.mark.parametrize("name,make,shape,data", INFERENCE_CASES, ids=[c[0] for c in INFERENCE_CASES])
def test_inference_is_the_identity_like_keras(keras, rng, name, make, shape, data):
    check_predict(keras, _between_dense(make, shape), data, rng)


@pytest.mark.keras
@pytest.mark.parametrize("name,make,shape,data", INFERENCE_CASES, ids=[c[0] for c in INFERENCE_CASES])
def test_keras_files_round_trip(keras, rng, tmp_path, name, make, shape, data):
    loaded = check_keras_file(keras, _between_dense(make, shape), data, rng, tmp_path)
    layer = loaded.layers[2]
    want = make(graphc)
    assert type(layer) is type(want)
    for key, value in want.get_config().items():
        if key != "name":
            assert layer.get_config()[key] == value, key


@pytest.mark.keras
@pytest.mark.parametrize("name,make", [(c[0], c[1]) for c in INFERENCE_CASES], ids=[c[0] for c in INFERENCE_CASES])
def test_configs_have_keras_keys(keras, name, make):
    from graphc.saving.registry import config_to_keras

    ours = config_to_keras(make(graphc), lambda layer: None)
    theirs = make(keras).get_config()
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        if key not in ("name", "dtype"):
            assert ours[key] == (list(theirs[key]) if isinstance(theirs[key], tuple) else theirs[key]), key


# ---------------------------------------------------------------------------- training: SpatialDropout
@pytest.mark.parametrize("cls,shape,data_format", [
    (layers.SpatialDropout1D, (40, 17, 31), None),
    (layers.SpatialDropout2D, (30, 7, 3, 29), "channels_last"),
    (layers.SpatialDropout2D, (30, 29, 7, 3), "channels_first"),
    (layers.SpatialDropout3D, (20, 3, 5, 2, 33), "channels_last"),
    (layers.SpatialDropout3D, (20, 33, 3, 5, 2), "channels_first"),
])
def test_spatial_dropout_drops_whole_channels(rng, cls, shape, data_format):
    rate = 0.35
    kwargs = {} if data_format is None else {"data_format": data_format}
    layer = cls(rate, seed=11, **kwargs)
    x = (rng.standard_normal(shape) + 3.0).astype(np.float32)  # no zeros among the inputs
    channel_axis = 1 if data_format == "channels_first" else len(shape) - 1
    spatial = tuple(a for a in range(1, len(shape)) if a != channel_axis)
    scale = np.float32(1.0) / np.float32(1.0 - rate)
    for target, y in _forwards(layer, x).items():
        assert y.shape == x.shape and y.dtype == np.float32
        kept = y != 0
        # one decision per (sample, channel): the same at every spatial position
        assert np.all(kept.all(axis=spatial) | ~kept.any(axis=spatial)), target
        np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-6, err_msg=target)
        decisions = kept.any(axis=spatial)
        assert abs(1.0 - decisions.mean() - rate) < 0.07, (target, decisions.mean())
    np.testing.assert_array_equal(layer(x), x)


def test_spatial_dropout_rate_one_zeroes_and_rate_zero_keeps(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(layers.SpatialDropout1D(1.0)(x, training=True), np.zeros_like(x))
    np.testing.assert_array_equal(layers.SpatialDropout1D(0.0)(x, training=True), x)
    assert isinstance(layers.SpatialDropout1D(0.5), layers.Dropout)  # as in Keras


def test_dropout_draws_differ_between_calls(rng):
    x = np.ones((8, 6, 50), np.float32)
    layer = layers.SpatialDropout1D(0.5)
    assert not np.array_equal(layer(x, training=True), layer(x, training=True))


# ---------------------------------------------------------------------------- training: Gaussian noise
def test_gaussian_noise_adds_noise_of_stddev(rng):
    stddev = 0.3
    layer = layers.GaussianNoise(stddev, seed=4)
    x = rng.standard_normal((400, 251)).astype(np.float32)
    for target, y in _forwards(layer, x).items():
        noise = (y - x).astype(np.float64)
        assert abs(noise.mean()) < 0.003, target
        assert abs(noise.std() - stddev) < 0.003, target
        z = noise / stddev  # Gaussian: skewness 0, kurtosis 3
        assert abs((z ** 3).mean()) < 0.03 and abs((z ** 4).mean() - 3.0) < 0.06, target
        assert abs(np.corrcoef(z.ravel()[:-1], z.ravel()[1:])[0, 1]) < 0.01, target


def test_gaussian_dropout_multiplies_by_noise_of_mean_one(rng):
    rate = 0.2
    layer = layers.GaussianDropout(rate, seed=6)  # seeded: the bounds are three standard errors
    x = (rng.uniform(0.5, 2.0, (300, 301)) * rng.choice([-1, 1], (300, 301))).astype(np.float32)
    for target, y in _forwards(layer, x).items():
        factor = (y / x).astype(np.float64)
        assert abs(factor.mean() - 1.0) < 0.005, target
        assert abs(factor.std() - math.sqrt(rate / (1 - rate))) < 0.005, target


def test_alpha_dropout_values_are_kept_or_saturated(rng):
    rate = 0.3
    layer = layers.AlphaDropout(rate, seed=8)
    a = np.float32(((1 - rate) * (1 + rate * float(ALPHA_P) ** 2)) ** -0.5)
    b = np.float32(-float(a) * float(ALPHA_P) * rate)
    x = rng.standard_normal((200, 301)).astype(np.float32)
    for target, y in _forwards(layer, x).items():
        kept = np.isclose(y, x * a + b, rtol=1e-6, atol=1e-6)
        dropped = np.isclose(y, ALPHA_P * a + b, rtol=1e-6, atol=1e-6)
        assert np.all(kept | dropped), target
        assert abs(dropped.mean() - rate) < 0.01, target
        # the point of alpha dropout: standard inputs keep mean 0 and variance 1 (roughly)
        assert abs(y.mean()) < 0.05 and abs(y.var() - 1.0) < 0.1, target


def test_alpha_dropout_noise_shape_shares_the_mask(rng):
    layer = layers.AlphaDropout(0.5, noise_shape=(None, 1, 13))
    x = (rng.standard_normal((50, 9, 13)) + 5.0).astype(np.float32)
    for target, y in _forwards(layer, x).items():
        saturated = y < 0  # a * alpha_p + b < 0 while kept values (x > 0) stay positive
        assert np.all(saturated.all(axis=1) | ~saturated.any(axis=1)), target


def test_activity_regularization_penalty_equals_keras(keras, rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    ours = layers.ActivityRegularization(l1=0.01, l2=0.2)
    theirs = keras.layers.ActivityRegularization(l1=0.01, l2=0.2)
    np.testing.assert_array_equal(ours(x), x)
    np.asarray(theirs(x))
    np.testing.assert_allclose(float(ours.losses[0]), float(theirs.losses[0]), rtol=1e-6)
    assert ours.activity_regularizer.get_config() == {"l1": 0.01, "l2": 0.2}


# ---------------------------------------------------------------------------- random_normal_like
def _normal_graph(seed=5):
    g = Graph("normal")
    x = g.add_input("x", TensorType("float32", ("batch", 13)))
    z = OpBuilder(g).random_normal_like(x, seed=seed)
    g.set_outputs([z])
    return g, z


def test_random_normal_native_statistics_and_stream():
    g, z = _normal_graph()
    native = build_native(g)
    x = np.zeros((40001, 13), np.float32)
    draws = [native.run({"x": x})[z] for _ in range(2)]
    for k, d in enumerate(draws):
        assert d.shape == x.shape and d.dtype == np.float32 and np.isfinite(d).all()
        assert abs(d.mean()) < 0.005 and abs(d.var() - 1.0) < 0.01
        assert abs((d.astype(np.float64) ** 4).mean() - 3.0) < 0.05
        # the fraction within one and two standard deviations
        assert abs(np.mean(np.abs(d) < 1) - 0.6827) < 0.005 and abs(np.mean(np.abs(d) < 2) - 0.9545) < 0.003
        # the documented Box-Muller of the counter-based hash (libm's last bit aside)
        np.testing.assert_allclose(d, normal_reference(5, 0, k, x.shape), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(draws[0], draws[1])
    np.testing.assert_allclose(native.run({"x": x[:1]})[z], normal_reference(5, 0, 2, (1, 13)), rtol=1e-5, atol=1e-6)


def test_random_normal_reference_streams():
    g, z = _normal_graph(seed=None)
    x = np.zeros((2000, 13), np.float32)
    d = run(g, {"x": x})[z]
    n = d.size  # an unseeded draw: bounds at five standard errors of the mean and of the variance
    assert d.dtype == np.float32 and abs(d.mean()) < 5 / np.sqrt(n) and abs(d.var() - 1.0) < 5 * np.sqrt(2 / n)
    seeded, z2 = _normal_graph(seed=123)
    a, b = run(seeded, {"x": x})[z2], run(seeded, {"x": x})[z2]
    assert not np.array_equal(a, b)  # a seeded stream goes on: new values each call
    assert get("random_normal_like").not_differentiable


def test_gaussian_noise_native_step_equals_the_reference_step_with_the_same_noise(rng, monkeypatch):
    """The native training step draws its noise from the counter-based hash; the reference step,
    given the same noise (its random op replaced by the hash's NumPy form), takes the same steps."""
    def make():
        graphc.utils.set_random_seed(3)
        i = Input(shape=(11,))
        h = layers.GaussianNoise(0.5, seed=21)(layers.Dense(9, activation="relu")(i))
        h = layers.GaussianDropout(0.3, seed=2)(h)
        model = Model(i, layers.Dense(3)(h))
        model.compile(optimizer="sgd", loss="mse")
        return model

    a, b = make(), make()
    x = rng.normal(size=(5, 11)).astype(np.float32)
    y = rng.normal(size=(5, 3)).astype(np.float32)
    graphc.build(a, target="native", training=True)
    got = [a.train_on_batch(x, y) for _ in range(3)]
    (step,) = [s for s in a._graphc_trainer._steps.values() if s.training]
    index_of = {op.attrs["seed"]: i for i, op in enumerate(step.graph.ops()) if op.type == "random_normal_like"}
    assert sorted(index_of) == [2, 21]
    calls = {seed: iter(range(3)) for seed in index_of}
    monkeypatch.setattr(get("random_normal_like"), "reference",
                        lambda v, *, seed: normal_reference(seed, index_of[seed], next(calls[seed]), v.shape))
    want = [b.train_on_batch(x, y) for _ in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6)
    assert len(set(got)) == 3


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("make,match", [
    (lambda: layers.SpatialDropout1D(1.5), "Expected a float value between 0 and 1. Received: rate=1.5"),
    (lambda: layers.SpatialDropout2D(0.5, data_format="channels_middle"), "data_format must be"),
    (lambda: layers.SpatialDropout2D(0.5)(Input(shape=(4, 3))), "SpatialDropout2D expects an input of rank 4"),
    (lambda: layers.SpatialDropout3D(0.5)(Input(shape=(4, 3, 2))), "SpatialDropout3D expects an input of rank 5"),
    (lambda: layers.GaussianNoise(-0.1), "Received: stddev=-0.1"),
    (lambda: layers.GaussianNoise(0.1)(Input(shape=(3,), dtype="int32")), "GaussianNoise needs a float input"),
    (lambda: layers.GaussianDropout(2), "Received: rate=2"),
    (lambda: layers.AlphaDropout(0.2, noise_shape=(None, 2, 5))(Input(shape=(7, 5))), "does not broadcast"),
    (lambda: layers.AlphaDropout(0.2, noise_shape=(None, 5))(Input(shape=(7, 5))), "one entry per input axis"),
    (lambda: layers.GaussianDropout(1.0)(np.ones((2, 3), np.float32), training=True), "infinite standard deviation"),
    (lambda: layers.AlphaDropout(1.0)(np.ones((2, 3), np.float32), training=True), "rate=1 drops every unit"),
    (lambda: layers.ActivityRegularization(l1=-1.0), "Invalid value for argument l1"),
])
def test_refused_configurations(make, match):
    with pytest.raises(ValueError, match=match):
        make()
