"""Activation layers and every Keras activation name, against Keras 3 through every target.

Each check builds the same model with graphc and Keras (``tests/keras_parity.py``), gives both
the same random weights and compares graphc's reference, ONNX and native outputs with Keras's
at batch 1 and 2; ``.keras`` files go both ways.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers
from graphc.frontend import activations
from graphc.frontend.layers import activation as activation_layers
from tests.keras_parity import check_keras_file, check_predict

pytestmark = pytest.mark.keras

NAMES = [n for n in activations.NAMES if n != "threshold"]  # threshold has no defaults: no name form in Keras


def _normal(*shape, scale=3.0):
    return lambda rng, n: (scale * rng.standard_normal((n, *shape))).astype("float32")


def test_all_names_are_exported():
    for name in activation_layers.__all__:
        assert getattr(layers, name) is getattr(activation_layers, name)
    assert "ActivationFunction" not in activation_layers.__all__


def test_every_keras_activation_name_is_known(keras):
    from keras.src.activations import ALL_OBJECTS_DICT

    assert sorted(ALL_OBJECTS_DICT) == sorted(activations.NAMES)
    for name, fn in ALL_OBJECTS_DICT.items():
        assert activations.get(fn) == fn.__name__ if name != "threshold" else True


# ---------------------------------------------------------------- every activation name
@pytest.mark.parametrize("name", NAMES)
def test_activation_name_on_dense_and_activation_layer(keras, name, rng):
    """``activation=name`` on Dense (fused into the product at level 2) and in Activation, on odd sizes."""
    def build(K):
        inp = K.Input((7,))
        h = K.layers.Dense(18, activation=name)(inp)
        if name == "glu":  # Keras sizes the next layer's weights for 18 features, not glu's 9: outputs only
            return K.Model(inp, [h, K.layers.Activation(name)(K.layers.Dense(6)(inp))])
        return K.Model(inp, K.layers.Activation(name)(K.layers.Dense(6)(h)))

    scale = 0.5 if name == "exponential" else 3.0
    check_predict(keras, build, _normal(7, scale=scale), rng)


@pytest.mark.parametrize("name", ["hard_silu", "mish", "sparsemax", "glu", "leaky_relu", "celu", "log_sigmoid"])
def test_activation_name_on_a_convolution(keras, name, rng):
    def build(K):
        inp = K.Input((5, 7, 3))
        return K.Model(inp, K.layers.Conv2D(4, 3, padding="same", activation=name)(inp))

    check_predict(keras, build, _normal(5, 7, 3), rng)


def test_activation_names_in_keras_files(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((7,))
        outs = [K.layers.Activation(n)(K.layers.Dense(4, activation=n)(inp)) for n in NAMES]
        return K.Model(inp, outs)

    loaded = check_keras_file(keras, build, _normal(7, scale=0.5), rng, tmp_path)
    keras_names = [keras.activations.get(n).__name__ for n in NAMES]  # swish is written as silu...
    assert [layer.activation for layer in loaded.layers if isinstance(layer, layers.Activation)] == keras_names


def test_activation_functions_as_arguments(keras, rng):
    """``activation=K.activations.hard_silu`` (a function, Keras's or graphc's) is named by the function."""
    assert graphc.activations.hard_silu is activations.hard_silu and graphc.activations.get(None) == "linear"
    assert layers.Dense(3, activation=keras.activations.swish).activation == "silu"

    def build(K):
        inp = K.Input((7,))
        h = K.layers.Dense(5, activation=K.activations.hard_silu)(inp)
        return K.Model(inp, K.activations.celu(K.layers.Dense(3, activation=K.activations.leaky_relu)(h)))

    check_predict(keras, build, _normal(7), rng)


def test_functional_forms_take_keras_arguments(keras, rng):
    x = (3 * rng.standard_normal((2, 6, 8))).astype("float32")
    cases = [("relu", {"negative_slope": 0.1, "max_value": 2.0, "threshold": 0.5}), ("leaky_relu", {}),
             ("celu", {"alpha": 0.5}), ("squareplus", {"b": 2}), ("soft_shrink", {"threshold": 0.25}),
             ("hard_shrink", {"threshold": 1.5}), ("threshold", {"threshold": 0.3, "default_value": -1.0}),
             ("softmax", {"axis": 1}), ("log_softmax", {"axis": -2}), ("glu", {"axis": 1}),
             ("sparsemax", {"axis": 1}), ("gelu", {"approximate": True}), ("elu", {"alpha": 0.3})]
    for name, kwargs in cases:
        want = keras.ops.convert_to_numpy(getattr(keras.activations, name)(x, **kwargs))
        got = getattr(activations, name)(x, **kwargs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        inp = Input((6, 8))
        model = Model(inp, getattr(activations, name)(inp, **kwargs))
        for target in ("onnx", "native"):
            np.testing.assert_allclose(graphc.build(model, target=target).predict(x), want, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} {target}")


def test_sparsemax_with_ties_follows_keras(keras):
    x = np.array([[1.0, 1.0, 1.0, 0.5, -2.0], [0.2, 0.2, 0.2, 0.2, 0.2], [3.0, -1.0, 2.9, 2.9, 0.0]], "float32")
    want = keras.ops.convert_to_numpy(keras.activations.sparsemax(x))
    inp = Input((5,))
    model = Model(inp, layers.Activation("sparsemax")(inp))
    for target in ("reference", "onnx", "native"):
        np.testing.assert_allclose(graphc.build(model, target=target).predict(x), want, rtol=1e-5, atol=1e-6,
                                   err_msg=target)


def test_activation_errors_are_named():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        layers.Dense(3, activation="swishy")
    with pytest.raises(ValueError, match="'threshold' needs the arguments threshold, default_value"):
        layers.Activation("threshold")
    with pytest.raises(TypeError, match="'celu' got unexpected argument"):
        activations.celu(np.zeros((1, 2), "float32"), beta=1.0)
    with pytest.raises(TypeError, match="missing the argument"):
        activations.threshold(np.zeros((1, 2), "float32"), 0.5)
    with pytest.raises(ValueError, match="'glu'.*known even number, got 7"):
        Sequential([Input((7,)), layers.Activation("glu")])
    with pytest.raises(ValueError, match="'soft_shrink': threshold must be >= 0"):
        activations.soft_shrink(np.zeros((1, 2), "float32"), threshold=-1.0)
    with pytest.raises(ValueError, match="'sparsemax'.*axis 3"):
        activations.sparsemax(Input((4,)), axis=3)


def test_functional_form_with_arguments_cannot_be_saved(tmp_path):
    inp = Input((4,))
    model = Model(inp, activations.celu(inp, alpha=0.5))
    with pytest.raises(Exception, match="ActivationFunction.*not one of graphc's built-in layer classes"):
        model.save(tmp_path / "m.keras")


# ---------------------------------------------------------------- ReLU, LeakyReLU, ELU
RELUS = [{}, {"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 0.5},
         {"max_value": 2.5, "negative_slope": 0.2, "threshold": 0.3}, {"max_value": 0}]


@pytest.mark.parametrize("kwargs", RELUS, ids=lambda k: "-".join(k) or "default")
def test_relu_layer(keras, kwargs, rng):
    def build(K):
        inp = K.Input((3, 7))
        return K.Model(inp, K.layers.ReLU(**kwargs)(K.layers.Dense(5)(inp)))

    check_predict(keras, build, _normal(3, 7), rng)


def test_relu_at_its_threshold_equals_keras(keras):
    x = np.array([[-1.0, 0.0, 0.25, 0.5, 0.75, 3.0, 7.0]], "float32")
    for kwargs in RELUS:
        want = keras.ops.convert_to_numpy(keras.layers.ReLU(**kwargs)(x))
        inp = Input((7,))
        model = Model(inp, layers.ReLU(**kwargs)(inp))
        for target in ("reference", "onnx", "native"):
            np.testing.assert_array_equal(graphc.build(model, target=target).predict(x), want, err_msg=str(kwargs))


@pytest.mark.parametrize("kwargs", [{"max_value": -1.0}, {"negative_slope": -0.1}, {"threshold": None},
                                    {"negative_slope": None}])
def test_relu_refuses_what_keras_refuses(keras, kwargs):
    with pytest.raises(ValueError):
        keras.layers.ReLU(**kwargs)
    with pytest.raises(ValueError, match="of a ReLU layer cannot be None or a negative value"):
        layers.ReLU(**kwargs)


def test_leaky_relu_and_elu(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((17,))
        a = K.layers.LeakyReLU()(inp)
        b = K.layers.LeakyReLU(negative_slope=0.05)(inp)
        c = K.layers.ELU()(inp)
        d = K.layers.ELU(alpha=0.5)(inp)
        return K.Model(inp, [a, b, c, d])

    check_predict(keras, build, _normal(17), rng)
    with pytest.raises(ValueError, match="negative_slope"):
        layers.LeakyReLU(negative_slope=-0.5)


def test_leaky_relu_takes_the_legacy_alpha(keras):
    with pytest.warns(UserWarning, match="alpha"):
        layer = layers.LeakyReLU(alpha=0.25)
    assert layer.negative_slope == 0.25 and layer.get_config()["negative_slope"] == 0.25
    x = np.array([[-2.0, 1.0]], "float32")
    np.testing.assert_allclose(layer(x), [[-0.5, 1.0]])


def test_activation_layers_round_trip_keras_files(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((5, 3))
        h = K.layers.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.2)(inp)
        h = K.layers.LeakyReLU(negative_slope=0.15)(h)
        h = K.layers.ELU()(h)
        h = K.layers.PReLU(shared_axes=[1])(h)
        return K.Model(inp, K.layers.Softmax(axis=[1, 2])(h))

    loaded = check_keras_file(keras, build, _normal(5, 3), rng, tmp_path)
    relu, leaky = loaded.layers[1], loaded.layers[2]
    assert (relu.max_value, relu.negative_slope, relu.threshold) == (2.0, 0.1, 0.2)
    assert leaky.negative_slope == 0.15 and loaded.layers[4].shared_axes == [1]


def test_elu_alpha_survives_graphc_files(keras, tmp_path, rng):
    """Keras's ELU leaves alpha out of its config; graphc writes it and both read it back."""
    model = Sequential([Input((4,)), layers.ELU(alpha=0.5)])
    model.save(tmp_path / "elu.keras")
    x = -np.ones((1, 4), "float32")
    want = 0.5 * (np.exp(-1.0) - 1.0)
    np.testing.assert_allclose(graphc.models.load_model(tmp_path / "elu.keras").predict(x), want, rtol=1e-6)
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "elu.keras").predict(x, verbose=0), want,
                               rtol=1e-6)


# ---------------------------------------------------------------- PReLU
@pytest.mark.parametrize("shape,shared", [((7,), None), ((5, 7, 3), [1, 2]), ((5, 7, 3), None), ((3, 7), 1),
                                          ((5, 7, 3), [2])])
def test_prelu(keras, shape, shared, rng):
    def build(K):
        inp = K.Input(shape)
        return K.Model(inp, K.layers.PReLU(shared_axes=shared)(inp))

    model, kmodel, _ = check_predict(keras, build, _normal(*shape), rng)
    assert [w.name for w in model.weights] == ["alpha"]
    assert model.layers[1].alpha.shape == tuple(kmodel.layers[1].alpha.shape)


def test_prelu_with_free_shared_axes(keras, rng):
    def build(K):
        inp = K.Input((None, None, 3))
        return K.Model(inp, K.layers.PReLU(shared_axes=[1, 2], alpha_initializer="ones")(inp))

    check_predict(keras, build, _normal(5, 7, 3), rng)


def test_prelu_trains_like_keras(keras, rng):
    """One SGD step: alpha's gradient is min(x, 0) times the cotangent, plus its L2 penalty's."""
    def build(K):
        inp = K.Input((3, 5))
        h = K.layers.PReLU(shared_axes=[1], alpha_regularizer="l2", alpha_constraint="non_neg")(inp)
        return K.Model(inp, K.layers.Dense(2)(h))

    g_model, k_model = build(graphc), build(keras)
    g_model.set_weights([rng.uniform(0.1, 0.5, w.shape).astype("float32") for w in g_model.weights])
    k_model.set_weights(g_model.get_weights())
    for m, lib in ((g_model, graphc), (k_model, keras)):
        m.compile(optimizer=lib.optimizers.SGD(learning_rate=0.1), loss="mse")
    x = _normal(3, 5)(rng, 4)
    y = rng.standard_normal((4, 3, 2)).astype("float32")
    assert np.isclose(g_model.train_on_batch(x, y), float(k_model.train_on_batch(x, y)), rtol=1e-5)
    for gw, kw in zip(g_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6)


def test_prelu_errors():
    with pytest.raises(ValueError, match="shared_axes \\[-1\\] must name non-batch axes"):
        Sequential([Input((3, 4)), layers.PReLU(shared_axes=-1)])
    with pytest.raises(ValueError, match="axis 1 of the input shape .* must be known"):
        Sequential([Input((None, 4)), layers.PReLU()])


# ---------------------------------------------------------------- Softmax
@pytest.mark.parametrize("axis", [-1, 1, [1, 2], [2], [-1, 1]])
def test_softmax_layer(keras, axis, rng):
    def build(K):
        inp = K.Input((3, 7))
        return K.Model(inp, K.layers.Softmax(axis=axis)(inp))

    check_predict(keras, build, _normal(3, 7), rng)


@pytest.mark.parametrize("mask_shape,dtype,axis", [((3, 7), "bool", -1), ((3, 7), "float32", -1),
                                                   ((1, 7), "bool", -1), ((3, 7), "int32", [1, 2]),
                                                   ((3, 1), "bool", 1)])
def test_softmax_with_a_mask(keras, mask_shape, dtype, axis, rng):
    def build(K):
        x = K.Input((3, 7))
        m = K.Input(mask_shape, dtype=dtype)
        return K.Model([x, m], K.layers.Softmax(axis=axis)(x, mask=m))

    def data(r, n):
        keep = r.random((n, *mask_shape)) < 0.6
        if dtype == "float32":
            mask = np.where(keep, r.uniform(0.6, 1.0, keep.shape), r.uniform(0.0, 0.4, keep.shape))
        else:
            mask = keep
        return [_normal(3, 7)(r, n), mask.astype(dtype)]

    check_predict(keras, build, data, rng)


def test_softmax_mask_round_trips_keras_files(keras, rng, tmp_path):
    def build(K):
        x = K.Input((3, 7))
        m = K.Input((3, 7), dtype="bool")
        return K.Model([x, m], K.layers.Softmax()(x, mask=m))

    check_keras_file(keras, build, lambda r, n: [_normal(3, 7)(r, n), r.random((n, 3, 7)) < 0.5], rng, tmp_path)


def test_softmax_errors():
    x = Input((3, 7))
    with pytest.raises(ValueError, match="must not have more dimensions"):
        layers.Softmax()(x, mask=Input((2, 3, 7), dtype="bool"))
    with pytest.raises(ValueError, match="each mask dimension must be 1 or match"):
        layers.Softmax()(x, mask=Input((5,), dtype="bool"))
    with pytest.raises(ValueError, match="axis 3 is out of bounds"):
        layers.Softmax(axis=3)(x)
    with pytest.raises(ValueError, match="names an axis twice"):
        layers.Softmax(axis=[1, -2])(x)
    with pytest.raises(TypeError, match="Softmax axis must be"):
        layers.Softmax(axis="last")


def test_activation_layers_are_exported_through_keras_names():
    from graphc.saving.registry import supported_keras_layers

    assert {"ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"} <= set(supported_keras_layers())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers.LeakyReLU(negative_slope=0.2)


def test_masks_pass_through_activation_and_normalization_layers(keras, rng):
    """Embedding(mask_zero) -> these layers -> LSTM: the LSTM still skips the padded steps, as in Keras."""
    def build(K):
        inp = K.Input((7,), dtype="int32")
        h = K.layers.Embedding(11, 6, mask_zero=True)(inp)
        h = K.layers.ReLU(negative_slope=0.1)(h)
        h = K.layers.LeakyReLU()(h)
        h = K.layers.PReLU(shared_axes=[1])(h)
        h = K.layers.ELU()(h)
        h = K.layers.GroupNormalization(groups=3)(h)
        h = K.layers.UnitNormalization()(h)
        return K.Model(inp, K.layers.LSTM(5)(h))

    def data(r, n):
        ids = r.integers(1, 11, size=(n, 7))
        ids[:, 4:] = 0  # padding at the end of every sequence
        ids[0, 2] = 0  # and a masked step inside one
        return ids.astype("int32")

    model, kmodel, _ = check_predict(keras, build, data, rng)
    assert all(layer.supports_masking for layer in model.layers[2:-1])
