"""Core layers (Dense, Activation, Dropout, Flatten, Reshape): numbers, shapes, errors, configs, Keras."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.frontend import activations
from tests.helpers import assert_close

# Keras's torch backend converts its outputs in a way NumPy 2 warns about; not graphc's concern.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "softmax", "selu", "elu", "softplus", "softsign", "swish",
               "gelu", "hard_sigmoid", "exponential", "relu6", "silu", "log_softmax"]


def spread(rng, shape) -> np.ndarray:
    """Values over [-6, 6] plus exact zeros and the points where piecewise activations bend."""
    x = rng.uniform(-6, 6, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    specials = np.array([0.0, -3.0, 3.0, 6.0, -1e-3, 1e-3], np.float32)
    flat[:min(len(specials), flat.size)] = specials[:flat.size]
    return x


# ---------------------------------------------------------------------------------------------
# Dense


@pytest.mark.parametrize("n, d_in, units", [(1, 1, 1), (3, 7, 17), (7, 17, 3), (17, 3, 7)])
def test_dense_matches_numpy(n, d_in, units, rng):
    layer = layers.Dense(units, activation="tanh")
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    out = layer(x)
    assert layer.kernel.shape == (d_in, units) and layer.bias.shape == (units,)
    assert_close(out, np.tanh(x @ layer.kernel.value + layer.bias.value))


def test_dense_on_rank_3_and_4_uses_the_last_axis(rng):
    layer = layers.Dense(5, use_bias=False)
    x = rng.normal(size=(2, 3, 7, 4)).astype(np.float32)
    out = layer(x)
    assert layer.bias is None and len(layer.weights) == 1
    assert_close(out, np.einsum("abcd,de->abce", x, layer.kernel.value), rtol=1e-5)
    t = Input((None, 4))
    assert layers.Dense(2)(t).shape == (None, None, 2)


def test_dense_initializers():
    layer = layers.Dense(300, kernel_initializer="ones", bias_initializer="zeros")
    layer.build((None, 200))
    assert np.all(layer.kernel.value == 1) and np.all(layer.bias.value == 0)
    glorot = layers.Dense(300)
    glorot.build((None, 200))
    limit = np.sqrt(6 / 500)
    assert np.abs(glorot.kernel.value).max() <= limit and np.abs(glorot.kernel.value).max() > 0.9 * limit
    assert glorot.kernel.dtype == "float32"


@pytest.mark.parametrize("units", [0, -3, 2.5, "4"])
def test_dense_bad_units(units):
    with pytest.raises(ValueError, match="Dense units must be a positive integer"):
        layers.Dense(units)


def test_dense_input_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"Layer 'ids_head' \(Dense\) cannot be called on input of shape "
                                         r"\(None, 4\) int32: Dense needs a float input, got int32"):
        layers.Dense(3, name="ids_head")(Input((4,), dtype="int32"))
    with pytest.raises(ValueError, match=r"'flat' \(Dense\).*rank >= 2, got shape \(4,\)"):
        layers.Dense(3, name="flat")(Input(batch_shape=(4,)))
    with pytest.raises(ValueError, match=r"last dimension of the input to Dense must be known"):
        layers.Dense(3)(Input((None,)))
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['unitz'\]"):
        layers.Dense(3, unitz=4)


def test_dense_called_again_on_another_width_refused():
    layer = layers.Dense(3, name="d3")
    layer(Input((4,)))
    with pytest.raises(ValueError, match="'d3'"):
        layer(Input((5,)))


# ---------------------------------------------------------------------------------------------
# Activation


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_is_known(name):
    assert name in activations.NAMES
    assert activations.get(name) == name


def test_activation_lookup():
    assert activations.get(None) == "linear"
    assert activations.get(activations.relu) == "relu"  # the function form, as keras.activations.relu
    with pytest.raises(ValueError, match="unknown activation 'reluu'"):
        layers.Activation("reluu")
    with pytest.raises(ValueError, match="cannot interpret 3 as an activation"):
        layers.Dense(2, activation=3)


def test_activation_formulas(rng):
    x = spread(rng, (3, 17))
    formulas = {
        "relu": np.maximum(x, 0), "sigmoid": 1 / (1 + np.exp(-x)), "tanh": np.tanh(x),
        "softplus": np.log1p(np.exp(x)), "softsign": x / (1 + np.abs(x)), "exponential": np.exp(x),
        "swish": x / (1 + np.exp(-x)), "hard_sigmoid": np.clip(x / 6 + 0.5, 0, 1),
        "elu": np.where(x > 0, x, np.expm1(x)), "relu6": np.clip(x, 0, 6),
        "softmax": np.exp(x) / np.exp(x).sum(-1, keepdims=True), "linear": x,
    }
    for name, want in formulas.items():
        assert_close(layers.Activation(name)(x), want, rtol=1e-5, what=name)


@pytest.mark.keras
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 17), (2, 3, 7), (1, 2, 3, 5)])
def test_activation_matches_keras(name, shape, keras, rng):
    x = spread(rng, shape)
    want = keras.ops.convert_to_numpy(keras.layers.Activation(name)(x))
    assert_close(layers.Activation(name)(x), want, rtol=1e-5, atol=1e-6, what=name)


def test_softmax_is_over_the_last_axis(rng):
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    out = layers.Activation("softmax")(x)
    assert_close(out.sum(axis=-1), np.ones((2, 3)))
    assert not np.allclose(out.sum(axis=1), 1)
    big = np.array([[1000.0, 1000.0, -1000.0]], np.float32)
    assert_close(layers.Activation("softmax")(big), [[0.5, 0.5, 0.0]])  # no overflow


# ---------------------------------------------------------------------------------------------
# Dropout, Flatten, Reshape


def test_dropout_is_the_identity_at_inference(rng):
    x = rng.normal(size=(4, 7)).astype(np.float32)
    for rate in (0.0, 0.5, 1.0):
        assert np.array_equal(layers.Dropout(rate)(x), x)
    i = Input((7,))
    model = Model(i, layers.Dense(3)(layers.Dropout(0.9)(i)))
    dense = model.layers[-1]
    assert_close(model.predict(x), x @ dense.kernel.value + dense.bias.value)
    assert np.array_equal(layers.Dropout(1.0)(x, training=True), np.zeros_like(x))


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_dropout_bad_rate(rate):
    with pytest.raises(ValueError, match=rf"Dropout rate must be in \[0, 1\], got {rate}"):
        layers.Dropout(rate)


@pytest.mark.parametrize("shape", [(3, 1), (2, 3, 7), (1, 4, 5, 3), (2, 1, 1, 1, 17)])
def test_flatten(shape, rng):
    x = rng.normal(size=shape).astype(np.float32)
    assert np.array_equal(layers.Flatten()(x), x.reshape(shape[0], -1))
    assert layers.Flatten()(Input(shape[1:])).shape == (None, int(np.prod(shape[1:])))


def test_flatten_with_free_dims_and_bad_format():
    assert layers.Flatten()(Input((None, 3))).shape == (None, None)
    with pytest.raises(ValueError, match="data_format must be 'channels_last' or 'channels_first'"):
        layers.Flatten(data_format="channels_middle")


@pytest.mark.parametrize("src, target, out", [((12,), (3, 4), (3, 4)), ((2, 6), (-1,), (12,)),
                                              ((4, 3, 2), (2, -1, 3), (2, 4, 3)), ((7,), (7, 1), (7, 1))])
def test_reshape(src, target, out, rng):
    x = rng.normal(size=(3, *src)).astype(np.float32)
    assert np.array_equal(layers.Reshape(target)(x), x.reshape(3, *out))
    assert layers.Reshape(target)(Input(src)).shape == (None, *out)


def test_reshape_errors():
    with pytest.raises(ValueError, match=r"Layer 'r' \(Reshape\).*total size of the new shape \(5, 3\) must equal "
                                         r"that of the input \(12,\)"):
        layers.Reshape((5, 3), name="r")(Input((12,)))
    with pytest.raises(ValueError, match=r"more than one -1"):
        layers.Reshape((-1, -1))


@pytest.mark.keras
def test_core_stack_matches_keras(keras, rng):
    def build(K):
        inp = K.Input((4, 6, 2))
        x = K.layers.Flatten()(inp)
        x = K.layers.Dense(24, activation="gelu")(x)
        x = K.layers.Dropout(0.5)(x)
        x = K.layers.Reshape((2, -1))(x)
        x = K.layers.Dense(5, activation="selu")(x)
        x = K.layers.Activation("softmax")(x)
        return K.Model(inp, K.layers.Reshape((10,))(x))

    import graphc

    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    kmodel.set_weights(model.get_weights())
    for n in (1, 3, 17):
        x = rng.normal(size=(n, 4, 6, 2)).astype(np.float32)
        assert_close(model.predict(x), kmodel.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# get_config / from_config


def core_layers():
    return [layers.Dense(3, activation="relu", use_bias=False, kernel_initializer="he_normal", name="d"),
            layers.Activation("softmax", name="a"), layers.Dropout(0.25, seed=3, name="dr"),
            layers.Flatten(name="f"), layers.Reshape((2, -1), name="r"), layers.Embedding(10, 4, name="e")]


@pytest.mark.parametrize("index", range(6))
def test_config_round_trip(index):
    layer = core_layers()[index]
    config = layer.get_config()
    copy = type(layer).from_config(config)
    assert type(copy) is type(layer) and copy is not layer
    assert copy.get_config() == config


def test_dense_config_content():
    config = layers.Dense(3, activation="relu", use_bias=False, name="d", trainable=False).get_config()
    assert config["units"] == 3 and config["activation"] == "relu" and config["use_bias"] is False
    assert config["trainable"] is False and config["name"] == "d"
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"


def test_input_shape_kept_in_config():
    config = layers.Dense(3, input_shape=(5,)).get_config()
    assert config["batch_input_shape"] == [None, 5]
    assert layers.Dense.from_config(config)._batch_input_shape == (None, 5)


@pytest.mark.keras
@pytest.mark.parametrize("index", range(6))
def test_config_agrees_with_keras(index, keras):
    layer = core_layers()[index]
    kind = type(layer).__name__
    klayer = getattr(keras.layers, kind).from_config(
        {k: v for k, v in layer.get_config().items() if k != "dtype"})
    kconfig = klayer.get_config()
    config = layer.get_config()
    for key in set(config) & set(kconfig) - {"dtype"}:
        want = kconfig[key]
        if key.endswith("_initializer"):
            assert config[key]["class_name"] == want["class_name"], key
        else:
            assert config[key] == (list(want) if isinstance(want, tuple) else want), key
    from graphc.saving import deserialize

    back = deserialize(keras.layers.serialize(klayer))
    assert type(back).__name__ == kind and back.get_config() == config
