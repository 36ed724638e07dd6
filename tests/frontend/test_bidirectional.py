"""Bidirectional against Keras 3: every merge mode, backward_layer, return_state and initial_state,
weights in Keras's order and file layout, masks, and the masked BiLSTM tagger on every target."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from tests.keras_parity import check_keras_file, check_predict

pytestmark = pytest.mark.keras


def _padded_ids(rng, n: int, t: int = 9, vocab: int = 13) -> np.ndarray:
    """Ids with zero padding of odd lengths; sample 1 has a gap, sample 2 is all padding."""
    x = rng.integers(1, vocab, size=(n, t)).astype("int32")
    for i in range(n):
        x[i, rng.integers(1, t):] = 0
    if n > 1:
        x[1, 1] = 0
    if n > 2:
        x[2] = 0
    return x


def tagger(K, cell="LSTM", merge_mode="concat", units=7):
    inp = K.Input((None,), dtype="int32")
    h = K.layers.Embedding(13, 5, mask_zero=True)(inp)
    h = K.layers.Bidirectional(getattr(K.layers, cell)(units, return_sequences=True), merge_mode=merge_mode)(h)
    out = K.layers.TimeDistributed(K.layers.Dense(4, activation="softmax"))(h)
    return K.Model(inp, out)


@pytest.mark.parametrize("n", [1, 3])
def test_masked_bilstm_tagger_matches_keras_on_every_target(keras, rng, n):
    _, _, errors = check_predict(keras, tagger, _padded_ids, rng, batches=(n, 2 * n + 1))
    assert max(errors.values()) < 1e-5


def test_masked_bilstm_tagger_keras_file_both_ways(keras, rng, tmp_path):
    loaded = check_keras_file(keras, tagger, _padded_ids, rng, tmp_path)
    bi = next(layer for layer in loaded.layers if isinstance(layer, layers.Bidirectional))
    assert bi.forward_layer.name == "forward_lstm" and bi.backward_layer.name == "backward_lstm"
    assert bi.forward_layer.zero_output_for_mask and bi.backward_layer.go_backwards


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_every_merge_mode_matches_keras(keras, rng, merge_mode, return_sequences):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(13, 3, mask_zero=True)(inp)
        out = K.layers.Bidirectional(K.layers.GRU(5, return_sequences=return_sequences),
                                     merge_mode=merge_mode)(h)
        return K.Model(inp, out)

    check_predict(keras, build, _padded_ids, rng)


@pytest.mark.parametrize("merge_mode", ["concat", None])
def test_return_state_order_and_initial_state_match_keras(keras, rng, merge_mode):
    def build(K):
        seq = K.Input((None, 3))
        states = [K.Input((4,)) for _ in range(4)]
        outs = K.layers.Bidirectional(K.layers.LSTM(4, return_sequences=True, return_state=True),
                                      merge_mode=merge_mode)(seq, initial_state=states)
        return K.Model([seq, *states], outs)

    def data(rng, n):
        return [rng.normal(size=(n, 7, 3)).astype("float32")] + [rng.normal(size=(n, 4)).astype("float32")
                                                                  for _ in range(4)]

    model, _, _ = check_predict(keras, build, data, rng)
    assert len(model.outputs) == (6 if merge_mode is None else 5)


def test_backward_layer_of_another_kind_matches_keras(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((None, 3))
        forward = K.layers.SimpleRNN(4, return_sequences=True)
        backward = K.layers.LSTM(4, activation="relu", return_sequences=True, go_backwards=True)
        out = K.layers.Bidirectional(forward, backward_layer=backward, merge_mode="sum")(inp)
        return K.Model(inp, K.layers.GlobalAveragePooling1D()(out))

    def data(rng, n):
        return rng.normal(size=(n, 5, 3)).astype("float32")

    check_predict(keras, build, data, rng)
    check_keras_file(keras, build, data, rng, tmp_path)


def test_weights_are_forward_then_backward_as_keras_names_them(keras):
    inp = Input((None, 3))
    bi = layers.Bidirectional(layers.LSTM(4), name="bi")
    Model(inp, bi(inp))
    assert [w.path for w in bi.weights] == [
        "forward_lstm/kernel", "forward_lstm/recurrent_kernel", "forward_lstm/bias",
        "backward_lstm/kernel", "backward_lstm/recurrent_kernel", "backward_lstm/bias"]
    kbi = keras.layers.Bidirectional(keras.layers.LSTM(4))
    kbi(keras.Input((None, 3)))
    assert [tuple(w.shape) for w in bi.weights] == [tuple(w.shape) for w in kbi.weights]
    from graphc.saving.layout import weight_groups

    groups = {g.vars_path: len(g.variables) for g in weight_groups(bi)}
    assert groups["forward_layer/cell/vars"] == 3 and groups["backward_layer/cell/vars"] == 3


def test_config_round_trips_and_matches_keras_keys(keras):
    bi = layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="mul", name="bi")
    kbi = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True), merge_mode="mul", name="bi")
    assert sorted(bi.get_config()) == sorted(kbi.get_config())
    clone = layers.Bidirectional.from_config(bi.get_config())
    assert clone.merge_mode == "mul" and clone.backward_layer.go_backwards
    assert clone.forward_layer.zero_output_for_mask  # Keras zeroes the masked steps of returned sequences


def test_initial_weights_are_split_between_the_layers(rng):
    inp = Input((None, 2))
    template = layers.Bidirectional(layers.SimpleRNN(3))
    Model(inp, template(inp))
    weights = [rng.normal(size=w.shape).astype("float32") for w in template.weights]
    bi = layers.Bidirectional(layers.SimpleRNN(3), weights=weights)
    Model(inp, bi(inp))
    for got, want in zip(bi.get_weights(), weights):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("build,message", [
    (lambda: layers.Bidirectional(layers.Dense(3)), "must be a recurrent layer"),
    (lambda: layers.Bidirectional(layers.LSTM(3), merge_mode="max"), "merge_mode must be one of"),
    (lambda: layers.Bidirectional(layers.LSTM(3), backward_layer=layers.LSTM(3)), "different go_backwards"),
    (lambda: layers.Bidirectional(layers.LSTM(3, return_sequences=True),
                                  backward_layer=layers.LSTM(3, go_backwards=True)), "same return_sequences"),
    (lambda: layers.Bidirectional(layers.LSTM(3))(Input((None, 3)), initial_state=[Input((3,))]),
     "even number of tensors"),
])
def test_bad_configurations_are_refused(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_unmasked_bidirectional_trains_like_keras(keras, rng):
    def build(K):
        inp = K.Input((6, 3))
        h = K.layers.Bidirectional(K.layers.GRU(4, return_sequences=True), merge_mode="ave")(inp)
        return K.Model(inp, K.layers.Dense(2)(K.layers.Bidirectional(K.layers.LSTM(3))(h)))

    from tests.keras_parity import twins

    g, k = twins(keras, build, rng)
    g.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse")
    k.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    x, y = rng.normal(size=(5, 6, 3)).astype("float32"), rng.normal(size=(5, 2)).astype("float32")
    assert np.isclose(g.train_on_batch(x, y), float(k.train_on_batch(x, y)), rtol=1e-5)
    for a, b in zip(g.get_weights(), k.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


def test_bidirectional_over_rnn_cells_and_stacks_matches_keras(keras, rng):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(13, 5, mask_zero=True)(inp)
        h = K.layers.Bidirectional(K.layers.RNN(K.layers.LSTMCell(4), return_sequences=True), merge_mode="sum")(h)
        cells = [K.layers.GRUCell(3), K.layers.SimpleRNNCell(2)]
        return K.Model(inp, K.layers.Bidirectional(K.layers.RNN(cells))(h))

    check_predict(keras, build, _padded_ids, rng)
