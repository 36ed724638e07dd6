"""ConvLSTM1D, ConvLSTM2D and ConvLSTM3D against Keras: weights, shapes, every target's
predictions (return_sequences, return_state, go_backwards, initial states, paddings, strides,
dilations, channels_first) at odd sizes, .keras files both ways, configs, training steps and
the configurations graphc refuses."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from tests.keras_parity import check_keras_file, check_predict


@pytest.fixture(autouse=True)
def _fresh_keras_names():
    """Leave Keras's automatic layer names as this module found them (later modules compare weight paths)."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].utils.clear_session(free_memory=False)

CF = "channels_first"


def normal(*shapes):
    if len(shapes) == 1:
        return lambda rng, n: rng.standard_normal((n, *shapes[0])).astype("float32")
    return lambda rng, n: [rng.standard_normal((n, *s)).astype("float32") for s in shapes]


# ---------------------------------------------------------------------------- weights and shapes
LAYOUTS = [
    (lambda L: L.ConvLSTM1D(4, 3), (None, 3, 7, 2)),
    (lambda L: L.ConvLSTM2D(3, (3, 2), strides=2, padding="same", return_sequences=True), (None, 5, 7, 5, 2)),
    (lambda L: L.ConvLSTM2D(2, 3, data_format=CF, return_state=True, use_bias=False), (None, 1, 3, 7, 5)),
    (lambda L: L.ConvLSTM3D(2, 2, dilation_rate=(1, 2, 1)), (None, 3, 3, 5, 2, 1)),
]


@pytest.mark.keras
@pytest.mark.parametrize("make,in_shape", LAYOUTS)
def test_weights_and_output_shapes_match_keras(keras, make, in_shape):
    keras.utils.clear_session(free_memory=False)
    k, g = make(keras.layers), make(layers)
    k.build(in_shape)
    out = g(Input(batch_shape=in_shape))
    assert [(w.name, tuple(w.shape)) for w in g.weights] == [(w.name, tuple(w.shape)) for w in k.weights]
    want = k.compute_output_shape(in_shape)
    got = [tuple(t.shape) for t in out] if isinstance(out, list) else tuple(out.shape)
    assert got == ([tuple(s) for s in want] if isinstance(want, tuple) and isinstance(want[0], tuple)
                   else tuple(want))


def test_forget_gate_bias_starts_at_one():
    layer = layers.ConvLSTM1D(3, 2, bias_initializer="zeros")
    layer(Input(shape=(4, 5, 2)))
    np.testing.assert_array_equal(layer.bias.value, np.repeat([0.0, 1.0, 0.0, 0.0], 3))
    plain = layers.ConvLSTM1D(3, 2, unit_forget_bias=False)
    plain(Input(shape=(4, 5, 2)))
    assert not plain.bias.value.any()


# ---------------------------------------------------------------------------- predictions on every target
def _one_layer(layer, shape, kw):
    def build(K):
        inp = K.Input(shape=shape)
        out = getattr(K.layers, layer)(**kw)(inp)
        return K.Model(inp, out)

    return build, normal(shape)


PREDICT_CASES = {
    "1d_valid": ("ConvLSTM1D", (3, 7, 2), dict(filters=4, kernel_size=3)),
    "1d_one_step_sequences_same_even_kernel": ("ConvLSTM1D", (1, 5, 3), dict(filters=3, kernel_size=2, padding="same",
                                                                              return_sequences=True)),
    "1d_dilated_backwards": ("ConvLSTM1D", (3, 11, 2), dict(filters=2, kernel_size=3, dilation_rate=2,
                                                           go_backwards=True, return_sequences=True)),
    "2d_same_stride2_states": ("ConvLSTM2D", (3, 7, 5, 2), dict(filters=3, kernel_size=3, strides=2, padding="same",
                                                                return_state=True)),
    "2d_sequences_activations": ("ConvLSTM2D", (3, 5, 3, 1), dict(filters=5, kernel_size=(2, 3), return_sequences=True,
                                                                  activation="relu",
                                                                  recurrent_activation="hard_sigmoid",
                                                                  unit_forget_bias=False)),
    "2d_channels_first_everything": ("ConvLSTM2D", (3, 2, 7, 5), dict(filters=2, kernel_size=3, padding="same",
                                                                      data_format=CF, return_sequences=True,
                                                                      return_state=True, go_backwards=True,
                                                                      use_bias=False)),
    "3d_valid": ("ConvLSTM3D", (3, 3, 5, 3, 1), dict(filters=2, kernel_size=(2, 3, 1), padding="valid")),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(PREDICT_CASES))
def test_predict_matches_keras_on_every_target(keras, rng, name):
    build, data = _one_layer(*PREDICT_CASES[name])
    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_initial_state_and_stacking_match_keras(keras, rng):
    """States passed in with initial_state= and returned with return_state, two layers stacked."""
    def build(K):
        seq = K.Input(shape=(3, 7, 2))
        h0, c0 = K.Input(shape=(5, 3)), K.Input(shape=(5, 3))
        out, h, c = K.layers.ConvLSTM1D(3, 3, return_sequences=True, return_state=True)(seq, initial_state=[h0, c0])
        top = K.layers.ConvLSTM1D(2, 3, padding="same")(out)
        return K.Model([seq, h0, c0], [top, h, c])

    check_predict(keras, build, normal((3, 7, 2), (5, 3), (5, 3)), rng)


@pytest.mark.keras
def test_keras_files_round_trip(keras, rng, tmp_path):
    def build(K):
        inp = K.Input(shape=(3, 5, 5, 2))
        h = K.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True)(inp)
        return K.Model(inp, K.layers.ConvLSTM2D(2, 2, strides=2, go_backwards=True)(h))

    loaded = check_keras_file(keras, build, normal((3, 5, 5, 2)), rng, tmp_path)
    assert [type(layer).__name__ for layer in loaded.layers[1:]] == ["ConvLSTM2D", "ConvLSTM2D"]


@pytest.mark.keras
def test_config_matches_keras(keras):
    def make(L):
        return L.ConvLSTM2D(3, (2, 3), strides=(1, 2), padding="same", data_format=CF, activation="relu",
                            return_sequences=True, go_backwards=True, dropout=0.25, unit_forget_bias=False)

    want, got = make(keras.layers).get_config(), make(layers).get_config()
    # graphc lists activity_regularizer only when one is set (graphc.frontend.layer); Keras's default is None
    assert set(got) <= set(want) and set(want) - set(got) <= {"activity_regularizer"}
    for key in ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation",
                "recurrent_activation", "use_bias", "unit_forget_bias", "dropout", "recurrent_dropout",
                "return_sequences", "return_state", "go_backwards", "stateful", "unroll"):
        assert got[key] == want[key], key
    assert layers.ConvLSTM2D.from_config(got).get_config() == got


# ---------------------------------------------------------------------------- training
def _trainable(lib):
    inp = lib.Input(shape=(3, 5, 4, 2))
    h = lib.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True, go_backwards=True)(inp)
    h = lib.layers.ConvLSTM2D(2, 2, strides=2)(h)
    return lib.Model(inp, lib.layers.Dense(1)(lib.layers.Flatten()(h)))


@pytest.mark.keras
def test_training_steps_match_keras(keras, rng):
    g_model, k_model = _trainable(graphc), _trainable(keras)
    k_model.set_weights(g_model.get_weights())
    g_model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.05), loss="mse")
    k_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    for step in range(3):
        x, y = rng.standard_normal((4, 3, 5, 4, 2)).astype("float32"), rng.standard_normal((4, 1)).astype("float32")
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
        x, y = rng.standard_normal((3, 3, 5, 4, 2)).astype("float32"), rng.standard_normal((3, 1)).astype("float32")
        got, want = native.train_step(x, y), reference.train_step(x, y)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4, err_msg=f"loss, step {step}")
        for p, q, var in zip(a.get_weights(), b.get_weights(), a.weights):
            np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6, err_msg=f"{var.path} after step {step}")


# ---------------------------------------------------------------------------- what graphc refuses
def test_free_number_of_steps_is_refused():
    with pytest.raises(ValueError, match="ConvLSTM2D needs a known number of time steps"):
        layers.ConvLSTM2D(2, 3)(Input(shape=(None, 5, 5, 2)))
    with pytest.raises(ValueError, match="ConvLSTM1D needs known spatial sizes"):
        layers.ConvLSTM1D(2, 3)(Input(shape=(4, None, 2)))


def test_dropout_is_refused_in_training_only(rng):
    inp = Input(shape=(3, 5, 2))
    model = Model(inp, layers.ConvLSTM1D(2, 3, dropout=0.2, name="clstm")(inp))
    x = rng.standard_normal((2, 3, 5, 2)).astype("float32")
    assert model.predict(x).shape == (2, 3, 2)  # inference: dropout does nothing, as in Keras
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="ConvLSTM1D 'clstm': dropout=0.2 is not supported in training"):
        model.train_on_batch(x, np.zeros((2, 3, 2), "float32"))


@pytest.mark.parametrize("make,match", [
    (lambda: layers.ConvLSTM2D(2, 3, stateful=True), "stateful=True is not supported"),
    (lambda: layers.ConvLSTM2D(2, 3, strides=2, dilation_rate=2), "strides > 1 cannot be combined"),
    (lambda: layers.ConvLSTM1D(2, 3, padding="causal"), "padding must be one of"),
    (lambda: layers.ConvLSTM3D(0, 3), "filters must be a positive integer"),
    (lambda: layers.ConvLSTM2D(2, 3, recurrent_dropout=1.5), r"recurrent_dropout must be in \[0, 1\]"),
    (lambda: layers.ConvLSTM2D(2, 3, data_format="NCHW"), "data_format must be"),
])
def test_refused_configurations(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"ConvLSTM2D expects an input of rank 5 \(batch, time, height, width, "
                                         r"channels\)"):
        layers.ConvLSTM2D(2, 3)(Input(shape=(3, 5, 2)))
    layer = layers.ConvLSTM1D(2, 3)
    layer(Input(shape=(3, 5, 2)))
    with pytest.raises(ValueError, match="built for inputs with 2 channels"):
        layer(Input(shape=(3, 5, 4)))
