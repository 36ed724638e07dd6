"""Conv1DTranspose, Conv2DTranspose and Conv3DTranspose against Keras: weights, output shapes
(free spatial sizes included), every target's predictions over strides, paddings,
output_paddings and dilations at odd sizes, .keras files both ways, configs, training steps
and the errors for configurations Keras refuses too."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.ir import dims
from graphc.ops.conv import keras_transpose_pads
from graphc.ops.registry import get
from tests.keras_parity import check_keras_file, check_predict


@pytest.fixture(autouse=True)
def _fresh_keras_names():
    """Leave Keras's automatic layer names as this module found them (later modules compare weight paths)."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].utils.clear_session(free_memory=False)


@pytest.fixture(autouse=True)
def _quiet_keras():
    """Keras's torch backend warns that some paddings may differ across its backends; graphc follows its
    JAX rule, which the torch backend reproduces."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def normal(shape):
    return lambda rng, n: rng.standard_normal((n, *shape)).astype("float32")


# ---------------------------------------------------------------------------- the op's geometry
@pytest.mark.keras
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("rank", [1, 2])
def test_op_reference_equals_keras_conv_transpose_for_every_small_geometry(keras, rng, padding, rank):
    """``keras_transpose_pads`` + ``conv_transpose`` equal ``keras.ops.conv_transpose`` for kernels 1..4,
    strides 1..3, dilations 1..2 and every output_padding."""
    spatial = (5, 3)[:rank]
    x = rng.standard_normal((2, *spatial, 3)).astype("float32")
    checked = 0
    for k in (1, 2, 3, 4):
        for s in (1, 2, 3):
            for d in (1, 2) if s == 1 else (1,):
                for extra in (None, *range(s)):
                    w = rng.standard_normal((k,) * rank + (4, 3)).astype("float32")
                    want = keras.ops.convert_to_numpy(keras.ops.conv_transpose(
                        x, w, strides=s, padding=padding, output_padding=extra, dilation_rate=d))
                    pads, out_pad = keras_transpose_pads(padding, (k,) * rank, (s,) * rank, (d,) * rank,
                                                         None if extra is None else (extra,) * rank)
                    got = get("conv_transpose").reference(x, w, strides=(s,) * rank, dilations=(d,) * rank,
                                                          pads=pads, output_padding=out_pad, groups=1)
                    what = f"kernel {k} stride {s} dilation {d} output_padding {extra}"
                    assert got.shape == want.shape, what
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)
                    checked += 1
    assert checked == 44


# ---------------------------------------------------------------------------- weights and shapes
LAYOUTS = [
    (lambda L: L.Conv1DTranspose(4, 3, strides=2), (None, 7, 3)),
    (lambda L: L.Conv1DTranspose(5, 4, padding="same", output_padding=1, strides=3, use_bias=False), (None, 7, 2)),
    (lambda L: L.Conv2DTranspose(3, (3, 2), strides=(2, 1), padding="same"), (None, 7, 5, 4)),
    (lambda L: L.Conv2DTranspose(2, 3, dilation_rate=2, data_format="channels_first"), (None, 3, 7, 5)),
    (lambda L: L.Conv3DTranspose(2, 2, strides=(1, 2, 3), output_padding=(0, 1, 2)), (None, 3, 5, 1, 2)),
    (lambda L: L.Conv1DTranspose(3, 3, strides=2, padding="same"), (None, None, 2)),
    (lambda L: L.Conv2DTranspose(3, 3, strides=2), (None, None, 5, 2)),
]


@pytest.mark.keras
@pytest.mark.parametrize("make,in_shape", LAYOUTS)
def test_weights_and_output_shapes_match_keras(keras, make, in_shape):
    keras.utils.clear_session(free_memory=False)
    k, g = make(keras.layers), make(layers)
    k.build(in_shape)
    y = g(Input(batch_shape=in_shape))
    assert [(w.path, tuple(w.shape)) for w in g.weights] == [(w.path, tuple(w.shape)) for w in k.weights]
    assert tuple(y.shape) == tuple(k.compute_output_shape(in_shape))
    assert tuple(g.compute_output_shape(in_shape)) == tuple(k.compute_output_shape(in_shape))


def test_free_length_gives_a_dimension_expression():
    inp = Input(shape=(None, 3))
    y = layers.Conv1DTranspose(2, 3, strides=2)(inp)
    graph = graphc.lower(Model(inp, y))
    steps = graph.type_of(graph.outputs[0]).shape[1]
    assert dims.symbols(steps) == {"input_layer_len"}
    assert [dims.evaluate(steps, {"input_layer_len": n}) for n in (1, 7)] == [3, 15]


# ---------------------------------------------------------------------------- predictions on every target
def _one_layer(rank, spatial, channels, kw):
    layer = {1: "Conv1DTranspose", 2: "Conv2DTranspose", 3: "Conv3DTranspose"}[rank]
    channels_first = kw.get("data_format") == "channels_first"
    shape = (channels, *spatial) if channels_first else (*spatial, channels)

    def build(K):
        inp = K.Input(shape=shape)
        return K.Model(inp, getattr(K.layers, layer)(**kw)(inp))

    return build, normal(shape)


PREDICT_CASES = {
    "1d_valid_stride3": (1, (7,), 3, dict(filters=5, kernel_size=2, strides=3)),
    "1d_same_stride2_output_padding0": (1, (1,), 3, dict(filters=3, kernel_size=3, strides=2, padding="same",
                                                         output_padding=0)),
    "1d_same_dilated": (1, (17,), 2, dict(filters=3, kernel_size=3, dilation_rate=3, padding="same",
                                          activation="tanh")),
    "2d_same_stride2_odd_kernel": (2, (7, 3), 3, dict(filters=4, kernel_size=3, strides=2, padding="same",
                                                      activation="relu")),
    "2d_valid_output_padding": (2, (3, 5), 2, dict(filters=3, kernel_size=(2, 3), strides=(3, 2),
                                                   output_padding=(2, 1))),
    "2d_same_output_padding_even_kernel": (2, (5, 3), 3, dict(filters=2, kernel_size=4, strides=3, padding="same",
                                                              output_padding=(1, 2), use_bias=False)),
    "2d_kernel_below_stride": (2, (3, 3), 5, dict(filters=7, kernel_size=1, strides=3)),
    "2d_stride2_37_filters": (2, (5, 3), 19, dict(filters=37, kernel_size=3, strides=2, padding="same")),
    "2d_channels_first_dilated": (2, (7, 5), 3, dict(filters=4, kernel_size=(3, 2), dilation_rate=(2, 1),
                                                     data_format="channels_first", activation="sigmoid")),
    "3d_same_strides": (3, (3, 1, 5), 2, dict(filters=3, kernel_size=(3, 2, 3), strides=(2, 1, 2),
                                              padding="same")),
    "3d_valid_output_padding_channels_first": (3, (3, 3, 1), 2, dict(filters=2, kernel_size=2, strides=(1, 3, 2),
                                                                     output_padding=(0, 2, 1),
                                                                     data_format="channels_first")),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(PREDICT_CASES))
def test_predict_matches_keras_on_every_target(keras, rng, name):
    build, data = _one_layer(*PREDICT_CASES[name])
    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_decoder_stack_with_free_spatial_sizes_matches_keras(keras, rng):
    """Free height and width: one compiled model serves inputs of different sizes."""
    def build(K):
        inp = K.Input(shape=(None, None, 3))
        h = K.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(inp)
        h = K.layers.Conv2DTranspose(3, 2, strides=2, output_padding=1)(h)
        return K.Model(inp, K.layers.Conv2DTranspose(2, 3, padding="same")(h))

    def data(rng, n):
        return rng.standard_normal((n, 3 + 2 * n, 7 - 2 * n, 3)).astype("float32")

    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_keras_files_round_trip(keras, rng, tmp_path):
    def build(K):
        inp = K.Input(shape=(3, 5, 2))
        h = K.layers.Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=1, activation="elu")(inp)
        h = K.layers.Convolution2DTranspose(2, (2, 3), dilation_rate=(1, 2), data_format="channels_first")(h)
        return K.Model(inp, h)

    loaded = check_keras_file(keras, build, normal((3, 5, 2)), rng, tmp_path)
    assert [type(layer).__name__ for layer in loaded.layers[1:]] == ["Conv2DTranspose", "Conv2DTranspose"]


@pytest.mark.keras
@pytest.mark.parametrize("make", [
    lambda L: L.Conv1DTranspose(3, 2),
    lambda L: L.Conv2DTranspose(4, (3, 1), strides=(2, 3), padding="same", output_padding=(1, 0),
                                data_format="channels_first", dilation_rate=1, activation="relu", use_bias=False),
    lambda L: L.Conv3DTranspose(2, 3, dilation_rate=2, kernel_initializer="he_normal", bias_initializer="ones"),
])
def test_config_matches_keras(keras, make):
    k, g = make(keras.layers), make(layers)
    want, got = k.get_config(), g.get_config()
    # graphc lists activity_regularizer only when one is set (graphc.frontend.layer); Keras's default is None
    assert set(got) <= set(want) and set(want) - set(got) <= {"activity_regularizer"}
    for key in ("filters", "kernel_size", "strides", "padding", "output_padding", "data_format", "dilation_rate",
                "use_bias"):
        assert got[key] == want[key], key
    assert type(g).from_config(got).get_config() == got


# ---------------------------------------------------------------------------- training
def _trainable(lib):
    inp = lib.Input(shape=(5, 3, 2))
    h = lib.layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="tanh")(inp)
    h = lib.layers.Conv2DTranspose(2, 2, strides=(1, 2), output_padding=(0, 1), data_format="channels_first")(h)
    h = lib.layers.Conv1DTranspose(2, 3, dilation_rate=2)(lib.layers.Reshape((-1, 7))(h))
    return lib.Model(inp, lib.layers.Dense(1)(lib.layers.Flatten()(h)))


@pytest.mark.keras
def test_training_steps_match_keras(keras, rng):
    g_model, k_model = _trainable(graphc), _trainable(keras)
    k_model.set_weights(g_model.get_weights())
    g_model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.05), loss="mse")
    k_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    for step in range(3):
        x, y = rng.standard_normal((4, 5, 3, 2)).astype("float32"), rng.standard_normal((4, 1)).astype("float32")
        g_loss, k_loss = g_model.train_on_batch(x, y), float(k_model.train_on_batch(x, y))
        assert np.isclose(g_loss, k_loss, rtol=1e-5, atol=1e-6), f"step {step}: loss {g_loss} vs Keras {k_loss}"
        for gw, kw, var in zip(g_model.get_weights(), k_model.get_weights(), g_model.weights):
            np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")


def test_native_training_steps_match_the_reference(rng):
    a, b = _trainable(graphc), _trainable(graphc)
    b.set_weights(a.get_weights())
    for model in (a, b):
        model.compile(optimizer="sgd", loss="mse")
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    for step in range(2):
        x, y = rng.standard_normal((3, 5, 3, 2)).astype("float32"), rng.standard_normal((3, 1)).astype("float32")
        got, want = native.train_step(x, y), reference.train_step(x, y)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4, err_msg=f"loss, step {step}")
        for p, q, var in zip(a.get_weights(), b.get_weights(), a.weights):
            np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6, err_msg=f"{var.path} after step {step}")


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,match", [
    (lambda: layers.Conv2DTranspose(2, 3, strides=2, output_padding=2), "output_padding must be smaller than strides"),
    (lambda: layers.Conv1DTranspose(2, 3, output_padding=1), "output_padding must be smaller than strides"),
    (lambda: layers.Conv1DTranspose(2, 3, output_padding=-1), "`output_padding` argument must be non-negative"),
    (lambda: layers.Conv2DTranspose(2, 3, strides=2, dilation_rate=2), "strides > 1 cannot be combined"),
    (lambda: layers.Conv1DTranspose(2, 3, padding="causal"), "padding must be one of"),
    (lambda: layers.Conv2DTranspose(0, 3), "filters must be a positive integer"),
    (lambda: layers.Conv2DTranspose(2, 3, kernel_constraint="max"), "constraint identifier: 'max'"),
    (lambda: layers.Conv3DTranspose(2, 3, data_format="channels_middle"), "data_format must be"),
])
def test_refused_configurations(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"Conv2DTranspose expects an input of rank 4 \(batch, height, "
                                                r"width, channels\)"):
        layers.Conv2DTranspose(2, 3)(Input(shape=(5, 3)))
    layer = layers.Conv1DTranspose(2, 3)
    layer(Input(shape=(5, 3)))
    with pytest.raises(ValueError, match="built for inputs with 3 channels"):
        layer(Input(shape=(5, 4)))
    with pytest.raises(ValueError, match="channel count"):
        layers.Conv1DTranspose(2, 3, data_format="channels_first")(Input(shape=(None, 5)))
