"""RNN over LSTMCell, GRUCell, SimpleRNNCell and StackedRNNCells against Keras 3: predictions on every
target (masks, go_backwards, return_state), weight names and file layout, configs, .keras files."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.saving.layout import weight_groups
from tests.keras_parity import check_keras_file, check_predict

pytestmark = pytest.mark.keras

CELLS = {"lstm": lambda K, u, **kw: K.layers.LSTMCell(u, **kw), "gru": lambda K, u, **kw: K.layers.GRUCell(u, **kw),
         "simple_rnn": lambda K, u, **kw: K.layers.SimpleRNNCell(u, **kw)}


def _masked_ids(rng, n: int, t: int = 7) -> np.ndarray:
    x = rng.integers(1, 11, size=(n, t)).astype("int32")
    for i in range(n):
        x[i, rng.integers(1, t + 1):] = 0
    x[0, min(2, t - 1)] = 0  # a gap inside the first sample
    return x


def _sequences(rng, n: int) -> np.ndarray:
    return rng.normal(size=(n, 5, 3)).astype("float32")


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("go_backwards", [False, True])
def test_rnn_over_each_cell_matches_keras(keras, rng, kind, go_backwards):
    def build(K):
        inp = K.Input((None, 3))
        out = K.layers.RNN(CELLS[kind](K, 5), return_sequences=True, go_backwards=go_backwards)(inp)
        return K.Model(inp, out)

    check_predict(keras, build, _sequences, rng)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_masked_stacked_cells_match_keras(keras, rng, go_backwards, return_sequences):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(11, 4, mask_zero=True)(inp)
        cells = [K.layers.GRUCell(3), K.layers.LSTMCell(5), K.layers.SimpleRNNCell(2)]
        out = K.layers.RNN(cells, return_sequences=return_sequences, go_backwards=go_backwards)(h)
        return K.Model(inp, out)

    check_predict(keras, build, _masked_ids, rng, batches=(1, 3))


def test_stacked_return_state_is_per_cell_as_in_keras(keras, rng):
    def build(K):
        inp = K.Input((None, 3))
        outs = K.layers.RNN([K.layers.LSTMCell(4), K.layers.GRUCell(3)], return_state=True)(inp)
        flat = [outs[0], *outs[1], outs[2]]
        return K.Model(inp, flat)

    model, _, _ = check_predict(keras, build, _sequences, rng)
    assert [t.shape for t in model.outputs] == [(None, 3), (None, 4), (None, 4), (None, 3)]


def test_single_cell_return_state_and_initial_state_match_keras(keras, rng):
    def build(K):
        inp, h0, c0 = K.Input((None, 3)), K.Input((4,)), K.Input((4,))
        out, h, c = K.layers.RNN(K.layers.LSTMCell(4), return_state=True, go_backwards=True)(
            inp, initial_state=[h0, c0])
        return K.Model([inp, h0, c0], [out, h, c])

    def data(rng, n):
        return [_sequences(rng, n), rng.normal(size=(n, 4)).astype("float32"),
                rng.normal(size=(n, 4)).astype("float32")]

    check_predict(keras, build, data, rng)


def test_cells_keras_file_both_ways(keras, rng, tmp_path):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(11, 4, mask_zero=True)(inp)
        h = K.layers.RNN([K.layers.GRUCell(3, reset_after=False), K.layers.SimpleRNNCell(3)],
                         return_sequences=True)(h)
        out = K.layers.RNN(K.layers.LSTMCell(2, unit_forget_bias=False), zero_output_for_mask=True,
                           return_sequences=True)(h)
        return K.Model(inp, out)

    loaded = check_keras_file(keras, build, _masked_ids, rng, tmp_path)
    stacked, single = [layer for layer in loaded.layers if isinstance(layer, layers.RNN)]
    assert isinstance(stacked.cell, layers.StackedRNNCells)
    assert [type(c).__name__ for c in stacked.cell.cells] == ["GRUCell", "SimpleRNNCell"]
    assert not stacked.cell.cells[0].reset_after and single.zero_output_for_mask


def test_weights_live_in_keras_cell_groups(keras):
    inp = Input((None, 3))
    rnn = layers.RNN([layers.GRUCell(2), layers.GRUCell(3), layers.LSTMCell(2)], name="rnn")
    single = layers.RNN(layers.SimpleRNNCell(2), name="rnn_1")
    model = Model(inp, [rnn(inp), single(inp)])
    paths = {g.vars_path: len(g.variables) for g in weight_groups(model)}
    assert paths["layers/rnn/cell/cells/gru_cell/vars"] == 3
    assert paths["layers/rnn/cell/cells/gru_cell_1/vars"] == 3
    assert paths["layers/rnn/cell/cells/lstm_cell/vars"] == 3
    assert paths["layers/rnn_1/cell/vars"] == 3
    kinp = keras.Input((None, 3))
    krnn = keras.layers.RNN([keras.layers.GRUCell(2), keras.layers.GRUCell(3), keras.layers.LSTMCell(2)])
    krnn(kinp)
    assert [tuple(w.shape) for w in rnn.weights] == [tuple(w.shape) for w in krnn.weights]
    assert [w.name for w in rnn.weights] == [w.name for w in krnn.weights]


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "SimpleRNNCell"])
def test_cell_configs_have_keras_keys_and_round_trip(keras, cell):
    ours, theirs = getattr(layers, cell)(3, dropout=0.25, name="c"), getattr(keras.layers, cell)(3, dropout=0.25,
                                                                                                  name="c")
    config = ours.get_config()
    assert sorted(config) == sorted(theirs.get_config())
    clone = getattr(layers, cell).from_config(config)
    assert clone.units == 3 and clone.dropout == 0.25
    rnn = layers.RNN(ours, return_sequences=True, name="r")
    assert sorted(rnn.get_config()) == sorted(keras.layers.RNN(theirs, return_sequences=True).get_config())


def test_a_cell_called_alone_computes_one_step(rng):
    """``cell(inputs, states)`` is one step: the same as an RNN over that cell on a one-step sequence."""
    cell = layers.LSTMCell(4)
    x = rng.normal(size=(2, 3)).astype("float32")
    h, c = rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
    out, (h1, c1) = cell(x, [h, c])
    o2, h2, c2 = layers.RNN(cell, return_state=True)(x[:, None, :], initial_state=[h, c])
    np.testing.assert_allclose(out, o2, rtol=1e-6)
    np.testing.assert_allclose(h1, h2, rtol=1e-6)
    np.testing.assert_allclose(c1, c2, rtol=1e-6)
    assert not np.allclose(h1, h)


@pytest.mark.parametrize("build,message", [
    (lambda: layers.RNN(layers.Dense(3)), "graphc runs the cells"),
    (lambda: layers.StackedRNNCells([layers.LSTMCell(2), layers.Dense(2)]), "LSTMCell, GRUCell and SimpleRNNCell"),
    (lambda: layers.RNN(layers.GRUCell(2), stateful=True), "stateful=True is not supported"),
    (lambda: layers.RNN(layers.GRUCell(2), unroll=True)(Input((None, 3))), "cannot unroll"),
    (lambda: layers.RNN([layers.GRUCell(2), layers.LSTMCell(2)])(Input((None, 3)), initial_state=[Input((2,))]),
     "initial_state must hold 3 tensor"),
    (lambda: layers.LSTMCell(0), "units must be a positive integer"),
    (lambda: layers.GRUCell(2, implementation=3), "implementation must be 1 or 2"),
])
def test_bad_cells_and_calls_are_refused(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_unroll_with_known_timesteps_matches_keras(keras, rng):
    def build(K):
        inp = K.Input((5, 3))
        return K.Model(inp, K.layers.RNN(K.layers.GRUCell(3), unroll=True)(inp))

    check_predict(keras, build, _sequences, rng)
