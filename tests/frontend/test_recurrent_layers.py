"""Recurrent layers: weights and initializers, shapes, errors, and Keras cross-checks in every mode."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.frontend.initializers import Constant
from graphc.frontend.layers import recurrent
from tests.helpers import assert_close
from tests.ops.test_recurrent import naive_gru, naive_lstm, naive_simple_rnn

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _keras_call(keras, cls_name, kwargs, x, weights, initial_state=None):
    layer = getattr(keras.layers, cls_name)(**kwargs)
    layer.build(x.shape)
    layer.set_weights(weights)
    out = layer(x) if initial_state is None else layer(x, initial_state=initial_state)
    return [keras.ops.convert_to_numpy(o) for o in _as_list(out)]


def _randomize(layer, rng, scale=0.5):
    layer.set_weights([rng.normal(scale=scale, size=w.shape).astype("float32") for w in layer.weights])


def test_all_names_are_exported():
    for name in recurrent.__all__:
        assert getattr(layers, name) is getattr(recurrent, name)
    assert set(recurrent.__all__) == {"LSTM", "GRU", "SimpleRNN", "LSTMCell", "GRUCell", "SimpleRNNCell",
                                      "StackedRNNCells", "RNN"}


# ---------------------------------------------------------------- weights and initializers
@pytest.mark.parametrize("units,features", [(1, 1), (3, 5), (17, 2)])
def test_lstm_weights_names_shapes_and_initializers(units, features):
    graphc.utils.set_random_seed(0)
    lstm = layers.LSTM(units)
    lstm.build((None, None, features))
    assert [w.name for w in lstm.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [w.shape for w in lstm.weights] == [(features, 4 * units), (units, 4 * units), (4 * units,)]
    assert all(w.trainable for w in lstm.weights) and lstm.non_trainable_weights == []
    assert [w.path for w in lstm.weights] == ["lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"]
    kernel, rec, bias = lstm.get_weights()
    limit = np.sqrt(6.0 / (features + 4 * units))
    assert np.all(np.abs(kernel) <= limit) and kernel.std() > 0
    # Orthogonal (units, 4*units): orthonormal rows.
    assert_close(rec @ rec.T, np.eye(units), atol=1e-5)
    assert_close(bias, np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)]))
    assert lstm.count_params() == 4 * (units * (features + units) + units)


def test_lstm_bias_options():
    lstm = layers.LSTM(3, unit_forget_bias=False)
    lstm.build((None, 4, 2))
    assert_close(lstm.bias.numpy(), np.zeros(12))
    lstm = layers.LSTM(3, bias_initializer="ones")
    lstm.build((None, 4, 2))
    assert_close(lstm.bias.numpy(), np.ones(12))
    lstm = layers.LSTM(3, bias_initializer=Constant(0.5))
    lstm.build((None, 4, 2))
    assert_close(lstm.bias.numpy(), np.array([0.5] * 3 + [1.0] * 3 + [0.5] * 6))
    lstm = layers.LSTM(3, use_bias=False)
    lstm.build((None, 4, 2))
    assert [w.name for w in lstm.weights] == ["kernel", "recurrent_kernel"]
    assert lstm.count_params() == 4 * 3 * (2 + 3)


def test_gru_and_simple_rnn_weights():
    gru = layers.GRU(3)
    gru.build((None, 7, 5))
    assert [(w.name, w.shape) for w in gru.weights] == [("kernel", (5, 9)), ("recurrent_kernel", (3, 9)),
                                                        ("bias", (2, 9))]
    assert_close(gru.bias.numpy(), np.zeros((2, 9)))
    gru = layers.GRU(3, reset_after=False)
    gru.build((None, 7, 5))
    assert gru.bias.shape == (9,)
    rnn = layers.SimpleRNN(17)
    rnn.build((None, 7, 5))
    assert [(w.name, w.shape) for w in rnn.weights] == [("kernel", (5, 17)), ("recurrent_kernel", (17, 17)),
                                                        ("bias", (17,))]
    assert_close(rnn.recurrent_kernel.numpy() @ rnn.recurrent_kernel.numpy().T, np.eye(17), atol=1e-5)
    assert rnn.count_params() == 17 * (5 + 17 + 1)


@pytest.mark.keras
@pytest.mark.parametrize("cls,kwargs", [("LSTM", {}), ("LSTM", {"use_bias": False}), ("GRU", {}),
                                        ("GRU", {"reset_after": False}), ("SimpleRNN", {}),
                                        ("SimpleRNN", {"use_bias": False})])
def test_weight_lists_match_keras(keras, cls, kwargs):
    ours = getattr(layers, cls)(3, **kwargs)
    ours.build((None, 7, 5))
    theirs = getattr(keras.layers, cls)(3, **kwargs)
    theirs.build((None, 7, 5))
    assert [(w.name, tuple(w.shape), w.trainable) for w in ours.weights] == \
        [(w.name, tuple(w.shape), w.trainable) for w in theirs.weights]
    assert ours.count_params() == theirs.count_params()


def test_siamese_lstm_counts_shared_weights_once():
    lstm = layers.LSTM(32)
    left, right = Input(shape=(None, 128)), Input(shape=(None, 128))
    lo, ro = lstm(left), lstm(right)
    assert lstm.count_params() == 20608
    merged = layers.concatenate([lo, ro], axis=-1)
    model = Model([left, right], layers.Dense(1, activation="sigmoid")(merged))
    assert model.count_params() == 20608 + 65
    assert lo is not ro and lo.shape == ro.shape == (None, 32)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("return_sequences,return_state", list(itertools.product([False, True], repeat=2)))
def test_symbolic_output_shapes(return_sequences, return_state):
    x = Input(shape=(None, 5))
    out = layers.LSTM(3, return_sequences=return_sequences, return_state=return_state)(x)
    seq = (None, None, 3) if return_sequences else (None, 3)
    if return_state:
        assert [t.shape for t in out] == [seq, (None, 3), (None, 3)]
    else:
        assert out.shape == seq
    gru = layers.GRU(4, return_sequences=return_sequences, return_state=return_state)(Input(shape=(7, 5)))
    seq = (None, 7, 4) if return_sequences else (None, 4)
    assert [t.shape for t in _as_list(gru)] == [seq] + [(None, 4)] * return_state


def test_compute_output_shape_and_ir():
    lstm = layers.LSTM(3, return_sequences=True)
    assert lstm.compute_output_shape((None, 9, 5)) == (None, 9, 3)
    x = Input(shape=(None, 5), name="words")
    model = Model(x, layers.LSTM(3, name="enc")(x))
    graph = graphc.lower(model)
    graphc.verify(graph)
    (op,) = [op for op in graph.ops() if op.type == "lstm"]
    assert op.layer == "enc"
    assert graph.type_of(op.inputs[0]).shape == ("batch", "words_len", 5)
    assert graph.type_of(op.outputs[0]).shape == ("batch", 3)


# ---------------------------------------------------------------- numerics vs NumPy
@pytest.mark.parametrize("n,t,f,u", [(1, 1, 3, 1), (3, 7, 5, 3), (3, 7, 2, 17)])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_lstm_model_matches_naive(n, t, f, u, go_backwards, rng):
    x_in, h_in, c_in = Input(shape=(None, f)), Input(shape=(u,)), Input(shape=(u,))
    lstm = layers.LSTM(u, return_sequences=True, return_state=True, go_backwards=go_backwards)
    model = Model([x_in, h_in, c_in], lstm(x_in, initial_state=[h_in, c_in]))
    _randomize(lstm, rng)
    x = rng.normal(size=(n, t, f)).astype("float32")
    h0, c0 = rng.normal(size=(n, u)).astype("float32"), rng.normal(size=(n, u)).astype("float32")
    got = model.predict([x, h0, c0])
    want = naive_lstm(x, *lstm.get_weights(), h0, c0, go_backwards=go_backwards)
    for g, w, what in zip(got, want, ("sequence", "h", "c")):
        assert_close(g, w, what=what, **TOL)


def test_gru_and_simple_rnn_eager_match_naive(rng):
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    for reset_after in (True, False):
        gru = layers.GRU(3, return_sequences=True, reset_after=reset_after)
        gru.build(x.shape)
        _randomize(gru, rng)
        assert_close(gru(x), naive_gru(x, *gru.get_weights(), np.zeros((3, 3)), reset_after=reset_after)[0],
                     **TOL)
    rnn = layers.SimpleRNN(17, activation="relu", go_backwards=True)
    rnn.build(x.shape)
    _randomize(rnn, rng, scale=0.2)
    assert_close(rnn(x), naive_simple_rnn(x, *rnn.get_weights(), np.zeros((3, 17)), act="relu",
                                          go_backwards=True)[1], **TOL)


def test_sequence_length_varies_between_calls(rng):
    x_in = Input(shape=(None, 4))
    lstm = layers.LSTM(3)
    model = Model(x_in, lstm(x_in))
    for t in (1, 7, 3):
        x = rng.normal(size=(2, t, 4)).astype("float32")
        want = naive_lstm(x, *lstm.get_weights(), np.zeros((2, 3)), np.zeros((2, 3)))[1]
        assert_close(model.predict(x), want, **TOL)


def test_integer_sequences_are_cast(rng):
    lstm = layers.LSTM(2)
    x = rng.integers(0, 3, size=(2, 4, 3))
    got = lstm(x)
    zeros = np.zeros((2, 2))
    assert_close(got, naive_lstm(x.astype("float32"), *lstm.get_weights(), zeros, zeros)[1], **TOL)


# ---------------------------------------------------------------- Keras cross-checks
LSTM_MODES = list(itertools.product([False, True], repeat=4))


@pytest.mark.keras
@pytest.mark.parametrize("return_sequences,return_state,go_backwards,with_state", LSTM_MODES)
def test_lstm_matches_keras(keras, return_sequences, return_state, go_backwards, with_state, rng):
    kwargs = {"units": 3, "return_sequences": return_sequences, "return_state": return_state,
              "go_backwards": go_backwards}
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    states = [rng.normal(size=(3, 3)).astype("float32") for _ in range(2)] if with_state else None
    ours = layers.LSTM(**kwargs)
    ours.build(x.shape)
    _randomize(ours, rng)
    got = _as_list(ours(x) if states is None else ours(x, initial_state=states))
    want = _keras_call(keras, "LSTM", kwargs, x, ours.get_weights(), states)
    assert len(got) == len(want) == (3 if return_state else 1)
    for g, w in zip(got, want):
        assert_close(g, w, **TOL)


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [
    {"units": 1}, {"units": 17}, {"units": 3, "use_bias": False}, {"units": 3, "unit_forget_bias": False},
    {"units": 3, "activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"units": 3, "activation": None, "recurrent_activation": "tanh"},
    {"units": 3, "activation": "swish"},
    {"units": 3, "dropout": 0.5, "recurrent_dropout": 0.3, "unroll": True},
])
@pytest.mark.parametrize("n,t", [(1, 1), (3, 7)])
def test_lstm_options_match_keras(keras, kwargs, n, t, rng):
    x = rng.normal(size=(n, t, 4)).astype("float32")
    ours = layers.LSTM(**kwargs, return_sequences=True)
    ours.build(x.shape)
    _randomize(ours, rng, scale=0.3)
    want = _keras_call(keras, "LSTM", {**kwargs, "return_sequences": True}, x, ours.get_weights())
    assert_close(ours(x), want[0], **TOL)


@pytest.mark.keras
def test_lstm_functional_model_matches_keras(keras, rng):
    def build(lib):
        x = lib.Input(shape=(None, 5))
        h, c = lib.Input(shape=(4,)), lib.Input(shape=(4,))
        seq, hn, cn = lib.layers.LSTM(4, return_sequences=True, return_state=True, name="enc")(
            x, initial_state=[h, c])
        last = lib.layers.LSTM(3, go_backwards=True, name="dec")(seq)
        return lib.Model([x, h, c], [last, hn, cn])

    ours, theirs = build(graphc), build(keras)
    for layer in ours.layers:
        _randomize(layer, rng)
    theirs.set_weights(ours.get_weights())
    for t in (1, 6):
        feeds = [rng.normal(size=(2, t, 5)).astype("float32"), rng.normal(size=(2, 4)).astype("float32"),
                 rng.normal(size=(2, 4)).astype("float32")]
        for g, w in zip(ours.predict(feeds), theirs.predict(feeds, verbose=0)):
            assert_close(g, w, **TOL)


@pytest.mark.keras
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("go_backwards,return_state,with_state", [(False, False, False), (True, True, True),
                                                                  (False, True, True)])
def test_gru_matches_keras(keras, reset_after, go_backwards, return_state, with_state, rng):
    kwargs = {"units": 3, "reset_after": reset_after, "go_backwards": go_backwards,
              "return_state": return_state, "return_sequences": True}
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    state = [rng.normal(size=(3, 3)).astype("float32")] if with_state else None
    ours = layers.GRU(**kwargs)
    ours.build(x.shape)
    _randomize(ours, rng)
    got = _as_list(ours(x) if state is None else ours(x, initial_state=state))
    want = _keras_call(keras, "GRU", kwargs, x, ours.get_weights(), state)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g, w, **TOL)


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [{"units": 3}, {"units": 17, "activation": "relu", "go_backwards": True},
                                    {"units": 1, "return_state": True, "use_bias": False}])
def test_simple_rnn_matches_keras(keras, kwargs, rng):
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    ours = layers.SimpleRNN(**kwargs, return_sequences=True)
    ours.build(x.shape)
    _randomize(ours, rng, scale=0.2)
    got = _as_list(ours(x))
    want = _keras_call(keras, "SimpleRNN", {**kwargs, "return_sequences": True}, x, ours.get_weights())
    for g, w in zip(got, want):
        assert_close(g, w, **TOL)


@pytest.mark.keras
@pytest.mark.parametrize("cls,kwargs", [("LSTM", {"units": 3, "return_sequences": True, "go_backwards": True,
                                                  "dropout": 0.25, "unit_forget_bias": False}),
                                        ("GRU", {"units": 2, "reset_after": False, "return_state": True}),
                                        ("SimpleRNN", {"units": 4, "activation": "relu"})])
def test_config_matches_keras(keras, cls, kwargs):
    ours = getattr(layers, cls)(**kwargs).get_config()
    theirs = getattr(keras.layers, cls)(**kwargs).get_config()
    skip = {"name", "dtype", "kernel_initializer", "recurrent_initializer", "bias_initializer"}
    assert set(ours) - {"batch_input_shape"} <= set(theirs)
    for key in set(ours) - skip:
        assert ours[key] == theirs[key], key
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        assert ours[key]["class_name"] == theirs[key]["class_name"]
    clone = getattr(layers, cls).from_config(ours)
    assert clone.get_config() == ours


# ---------------------------------------------------------------- errors
def test_lstm_on_2d_tensor_names_the_layer_and_shape():
    with pytest.raises(ValueError) as err:
        layers.LSTM(4, name="encoder")(Input(shape=(5,)))
    assert "'encoder'" in str(err.value) and "(None, 5)" in str(err.value) and "3-D" in str(err.value)
    lstm = layers.LSTM(4, name="enc2")
    with pytest.raises(ValueError) as err:
        lstm.build((None, 5))
    assert "'enc2'" in str(err.value) and "(None, 5)" in str(err.value)
    assert not lstm.built and lstm.weights == []
    with pytest.raises(ValueError, match="'gru'.*3-D.*got shape \\(2, 3, 4, 5\\)"):
        layers.GRU(2)(np.zeros((2, 3, 4, 5), "float32"))


@pytest.mark.parametrize("build,message", [
    (lambda: layers.LSTM(3)(Input(shape=(None, None))), "feature dimension .* must be known"),
    (lambda: layers.LSTM(3, stateful=True), "stateful=True is not supported"),
    (lambda: layers.LSTM(0), "units must be a positive integer, got 0"),
    (lambda: layers.GRU(2.5), "units must be a positive integer, got 2.5"),
    (lambda: layers.LSTM(3, activation="softmax"), "activation 'softmax' is not supported"),
    (lambda: layers.SimpleRNN(3, activation="relu6"), "activation 'relu6' is not supported"),
    (lambda: layers.LSTM(3, activation="nope"), "unknown activation 'nope'"),
    (lambda: layers.LSTM(3, kernel_regularizer="l3"), "regularizer identifier: 'l3'"),
    (lambda: layers.LSTM(3, dropout=1.5), "dropout must be in \\[0, 1\\], got 1.5"),
    (lambda: layers.LSTM(3, use_cudnn="yes"), "use_cudnn must be"),
    (lambda: layers.LSTM(3, frobnicate=1), "unexpected keyword argument"),
])
def test_constructor_and_shape_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_call_errors_name_the_layer():
    x = Input(shape=(None, 5))
    h, c, bad = Input(shape=(3,)), Input(shape=(3,)), Input(shape=(4,))
    with pytest.raises(ValueError, match="'enc'.*initial_state must be 2 tensor\\(s\\) \\[h, c\\], got 1"):
        layers.LSTM(3, name="enc")(x, initial_state=[h])
    with pytest.raises(ValueError, match="'enc2'.*initial state 1 must have shape"):
        layers.LSTM(3, name="enc2")(x, initial_state=[h, bad])
    with pytest.raises(ValueError, match="'g'.*initial_state must be 1 tensor"):
        layers.GRU(3, name="g")(x, initial_state=[h, c])
    with pytest.raises(ValueError, match="mask must have shape \\(batch, timesteps\\)"):
        layers.LSTM(3)(x, mask=Input(shape=(None, 2)))
    with pytest.raises(ValueError, match="one sequence tensor"):
        layers.LSTM(3)([x, x])
    lstm = layers.LSTM(3)
    lstm(x)
    with pytest.raises(ValueError, match="kernel of shape \\(5, 12\\) does not match the 4 features"):
        lstm(Input(shape=(None, 4)))


def test_embedding_lstm_question_answering_counts():
    text, question = Input(shape=(None,), dtype="int32"), Input(shape=(None,), dtype="int32")
    encoded_text = layers.LSTM(32)(layers.Embedding(10000, 64)(text))
    encoded_question = layers.LSTM(16)(layers.Embedding(10000, 32)(question))
    merged = layers.concatenate([encoded_text, encoded_question], axis=-1)
    model = Model([text, question], layers.Dense(500, activation="softmax")(merged))
    assert model.count_params() == 1000052
    ids = np.random.default_rng(0).integers(1, 10000, size=(2, 9))
    assert model.predict([ids, ids[:, :4]]).shape == (2, 500)
