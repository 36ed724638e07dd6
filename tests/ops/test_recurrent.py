"""Recurrent ops: shape rules (symbolic T and batch, every error) and references vs naive NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder, ShapeError, get
from graphc.ops.recurrent import ACTIVATIONS
from tests.helpers import assert_close

# Independent scalar-clear activation formulas (float64).
ACT = {
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0.0),
    "hard_sigmoid": lambda z: np.clip(z / 6.0 + 0.5, 0.0, 1.0),
    "linear": lambda z: z,
}


def _order(t: int, go_backwards: bool):
    return list(range(t))[::-1] if go_backwards else list(range(t))


def naive_lstm(x, w, r, b, h0, c0, act="tanh", ract="sigmoid", go_backwards=False):
    """One sample and one step at a time, each gate with its own slice (gate order i, f, c, o)."""
    x, w, r, b = (np.asarray(a, np.float64) for a in (x, w, r, b))
    u = r.shape[0]
    gate = {k: (w[:, j * u:(j + 1) * u], r[:, j * u:(j + 1) * u], b[j * u:(j + 1) * u])
            for j, k in enumerate("ifco")}
    seqs, hs, cs = [], [], []
    for n in range(x.shape[0]):
        h, c, seq = np.array(h0[n], np.float64), np.array(c0[n], np.float64), []
        for t in _order(x.shape[1], go_backwards):
            pre = {k: x[n, t] @ wk + h @ rk + bk for k, (wk, rk, bk) in gate.items()}
            i, f, o = ACT[ract](pre["i"]), ACT[ract](pre["f"]), ACT[ract](pre["o"])
            c = f * c + i * ACT[act](pre["c"])
            h = o * ACT[act](c)
            seq.append(h)
        seqs.append(np.array(seq).reshape(len(seq), u))
        hs.append(h)
        cs.append(c)
    return np.array(seqs), np.array(hs), np.array(cs)


def naive_gru(x, w, r, b, h0, act="tanh", ract="sigmoid", go_backwards=False, reset_after=True):
    x, w, r, b = (np.asarray(a, np.float64) for a in (x, w, r, b))
    u = r.shape[0]
    wz, wr, wh = w[:, :u], w[:, u:2 * u], w[:, 2 * u:]
    rz, rr, rh = r[:, :u], r[:, u:2 * u], r[:, 2 * u:]
    bi, br = (b[0], b[1]) if reset_after else (b, np.zeros_like(b))
    seqs, hs = [], []
    for n in range(x.shape[0]):
        h, seq = np.array(h0[n], np.float64), []
        for t in _order(x.shape[1], go_backwards):
            xt = x[n, t]
            z = ACT[ract](xt @ wz + bi[:u] + h @ rz + br[:u])
            rg = ACT[ract](xt @ wr + bi[u:2 * u] + h @ rr + br[u:2 * u])
            if reset_after:
                hh = ACT[act](xt @ wh + bi[2 * u:] + rg * (h @ rh + br[2 * u:]))
            else:
                hh = ACT[act](xt @ wh + bi[2 * u:] + (rg * h) @ rh)
            h = z * h + (1 - z) * hh
            seq.append(h)
        seqs.append(np.array(seq).reshape(len(seq), u))
        hs.append(h)
    return np.array(seqs), np.array(hs)


def naive_simple_rnn(x, w, r, b, h0, act="tanh", go_backwards=False):
    x, w, r, b = (np.asarray(a, np.float64) for a in (x, w, r, b))
    seqs, hs = [], []
    for n in range(x.shape[0]):
        h, seq = np.array(h0[n], np.float64), []
        for t in _order(x.shape[1], go_backwards):
            h = ACT[act](x[n, t] @ w + b + h @ r)
            seq.append(h)
        seqs.append(np.array(seq).reshape(len(seq), r.shape[0]))
        hs.append(h)
    return np.array(seqs), np.array(hs)


def _weights(rng, f, u, gates, bias_shape=None):
    w = rng.normal(scale=0.5, size=(f, gates * u)).astype("float32")
    r = rng.normal(scale=0.5, size=(u, gates * u)).astype("float32")
    b = rng.normal(scale=0.5, size=bias_shape or (gates * u,)).astype("float32")
    return w, r, b


def _run_op(op, arrays, sym_shapes=None, **attrs):
    """Build a one-op graph (inputs may have symbolic dims) and run it with the reference interpreter."""
    g = Graph(op)
    names = []
    for i, a in enumerate(arrays):
        shape = sym_shapes[i] if sym_shapes and sym_shapes[i] is not None else a.shape
        names.append(g.add_input(f"in{i}", TensorType(a.dtype.name, tuple(shape))))
    outs = OpBuilder(g, "test").emit(op, *names, **attrs)
    g.set_outputs(list(outs))
    res = run(g, dict(zip(names, arrays)))
    return [res[o] for o in outs], [g.type_of(o) for o in outs]


# ---------------------------------------------------------------- lstm numerics
@pytest.mark.parametrize("n,t,f,u", [(1, 1, 1, 1), (3, 7, 5, 3), (3, 7, 2, 17), (1, 7, 3, 17), (3, 1, 4, 3)])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_matches_naive(n, t, f, u, go_backwards, with_state, rng):
    x = rng.normal(size=(n, t, f)).astype("float32")
    w, r, b = _weights(rng, f, u, 4)
    h0 = rng.normal(size=(n, u)).astype("float32") if with_state else np.zeros((n, u), "float32")
    c0 = rng.normal(size=(n, u)).astype("float32") if with_state else np.zeros((n, u), "float32")
    states = (h0, c0) if with_state else ()
    seq, h, c = naive_lstm(x, w, r, b, h0, c0, go_backwards=go_backwards)
    (y, hy, cy), types = _run_op("lstm", [x, w, r, b, *states], go_backwards=go_backwards,
                                 return_sequences=True)
    assert_close(y, seq, what="sequence")
    assert_close(hy, h, what="h")
    assert_close(cy, c, what="c")
    assert [tt.shape for tt in types] == [(n, t, u), (n, u), (n, u)]
    assert y.dtype == hy.dtype == cy.dtype == np.float32
    (last, hl, cl), types = _run_op("lstm", [x, w, r, b, *states], go_backwards=go_backwards)
    assert types[0].shape == (n, u)
    assert_close(last, h, what="last output")
    assert_close(hl, h, what="h")
    assert_close(cl, c, what="c")


@pytest.mark.parametrize("act,ract", [("relu", "hard_sigmoid"), ("linear", "sigmoid"), ("tanh", "linear")])
def test_lstm_other_activations(act, ract, rng):
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    w, r, b = _weights(rng, 4, 3, 4)
    z = np.zeros((3, 3), "float32")
    seq, h, c = naive_lstm(x, w, r, b, z, z, act=act, ract=ract)
    (y, hy, cy), _ = _run_op("lstm", [x, w, r, b], activation=act, recurrent_activation=ract,
                             return_sequences=True)
    assert_close(y, seq, rtol=1e-5, atol=1e-5)
    assert_close(cy, c, rtol=1e-5, atol=1e-5)


def test_lstm_symbolic_time_and_batch(rng):
    w, r, b = _weights(rng, 5, 3, 4)
    for n, t in [(2, 7), (3, 1), (1, 4)]:
        x = rng.normal(size=(n, t, 5)).astype("float32")
        z = np.zeros((n, 3), "float32")
        (y, h, c), types = _run_op("lstm", [x, w, r, b], sym_shapes=[("batch", "T", 5), None, None, None],
                                   return_sequences=True)
        assert [tt.shape for tt in types] == [("batch", "T", 3), ("batch", 3), ("batch", 3)]
        seq, hn, cn = naive_lstm(x, w, r, b, z, z)
        assert_close(y, seq)
        assert_close(c, cn)


def test_lstm_state_fixes_a_free_batch(rng):
    g = Graph("g")
    b = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("batch", "T", 5)))
    h0 = g.add_input("h0", TensorType("float32", (2, 3)))
    c0 = g.add_input("c0", TensorType("float32", (2, 3)))
    w, r, bias = (g.add_constant(n, a) for n, a in zip(("w", "r", "b"), _weights(rng, 5, 3, 4)))
    y, h, c = b.lstm(x, w, r, bias, h0, c0)
    assert g.type_of(y).shape == (2, 3)


def test_lstm_empty_sequence_returns_initial_state(rng):
    w, r, b = _weights(rng, 2, 3, 4)
    h0, c0 = rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    x = np.zeros((2, 0, 2), "float32")
    y, h, c = get("lstm").reference(x, w, r, b, h0, c0, activation="tanh", recurrent_activation="sigmoid",
                                    go_backwards=False, return_sequences=False)
    assert_close(y, h0)
    assert_close(c, c0)
    assert h is not h0 and c is not c0
    seq, _, _ = get("lstm").reference(x, w, r, b, activation="tanh", recurrent_activation="sigmoid",
                                      go_backwards=False, return_sequences=True)
    assert seq.shape == (2, 0, 3)


# ---------------------------------------------------------------- gru and simple_rnn numerics
@pytest.mark.parametrize("n,t,f,u", [(1, 1, 1, 1), (3, 7, 5, 3), (3, 7, 2, 17)])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_gru_matches_naive(n, t, f, u, go_backwards, reset_after, with_state, rng):
    x = rng.normal(size=(n, t, f)).astype("float32")
    w, r, b = _weights(rng, f, u, 3, (2, 3 * u) if reset_after else (3 * u,))
    h0 = rng.normal(size=(n, u)).astype("float32") if with_state else np.zeros((n, u), "float32")
    seq, h = naive_gru(x, w, r, b, h0, go_backwards=go_backwards, reset_after=reset_after)
    (y, hy), types = _run_op("gru", [x, w, r, b, *([h0] if with_state else [])], go_backwards=go_backwards,
                             return_sequences=True, reset_after=reset_after)
    assert [tt.shape for tt in types] == [(n, t, u), (n, u)]
    assert_close(y, seq, what="sequence")
    assert_close(hy, h, what="h")
    (last, _), _ = _run_op("gru", [x, w, r, b], go_backwards=go_backwards, reset_after=reset_after,
                           activation="relu", recurrent_activation="hard_sigmoid")
    _, h_relu = naive_gru(x, w, r, b, np.zeros((n, u)), act="relu", ract="hard_sigmoid",
                          go_backwards=go_backwards, reset_after=reset_after)
    assert_close(last, h_relu, rtol=1e-5, atol=1e-5, what="relu/hard_sigmoid")


@pytest.mark.parametrize("n,t,f,u", [(1, 1, 1, 1), (3, 7, 5, 3), (3, 7, 2, 17)])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_simple_rnn_matches_naive(n, t, f, u, go_backwards, act, rng):
    x = rng.normal(size=(n, t, f)).astype("float32")
    w, r, b = _weights(rng, f, u, 1)
    r *= 0.5
    h0 = rng.normal(size=(n, u)).astype("float32")
    seq, h = naive_simple_rnn(x, w, r, b, h0, act=act, go_backwards=go_backwards)
    (y, hy), types = _run_op("simple_rnn", [x, w, r, b, h0], activation=act, go_backwards=go_backwards,
                             return_sequences=True)
    assert [tt.shape for tt in types] == [(n, t, u), (n, u)]
    assert_close(y, seq, rtol=1e-5, atol=1e-5)
    (last, _), _ = _run_op("simple_rnn", [x, w, r, b, h0], activation=act, go_backwards=go_backwards)
    assert_close(last, h, rtol=1e-5, atol=1e-5)


def test_gru_and_simple_rnn_symbolic_time(rng):
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    w, r, b = _weights(rng, 4, 3, 3, (2, 9))
    (y, h), types = _run_op("gru", [x, w, r, b], sym_shapes=[("batch", "T", 4), None, None, None],
                            return_sequences=True)
    assert [tt.shape for tt in types] == [("batch", "T", 3), ("batch", 3)]
    assert_close(y, naive_gru(x, w, r, b, np.zeros((2, 3)))[0])
    w, r, b = _weights(rng, 4, 3, 1)
    (y, h), types = _run_op("simple_rnn", [x, w, r, b], sym_shapes=[(2, "T", 4), None, None, None])
    assert [tt.shape for tt in types] == [(2, 3), (2, 3)]
    assert_close(y, naive_simple_rnn(x, w, r, b, np.zeros((2, 3)))[1])


# ---------------------------------------------------------------- shape-rule errors
def _types(*shapes, dtype="float32"):
    return [TensorType(dtype, s) for s in shapes]


LSTM_OK = [(2, "T", 5), (5, 12), (3, 12), (12,)]
LSTM_ATTRS = {"activation": "tanh", "recurrent_activation": "sigmoid", "go_backwards": False,
              "return_sequences": False}


@pytest.mark.parametrize("shapes,attrs,message", [
    ([(2, 5), (5, 12), (3, 12), (12,)], {}, "rank 3"),
    ([(2, "T", 4), (5, 12), (3, 12), (12,)], {}, "does not match the 4 features"),
    ([(2, "T", 5), (5, 10), (3, 10), (10,)], {}, "multiple of 4"),
    ([(2, "T", 5), (5, 12, 1), (3, 12), (12,)], {}, "kernel must have rank 2"),
    ([(2, "T", 5), (5, 12), (4, 12), (12,)], {}, "recurrent_kernel must have shape (3, 12)"),
    ([(2, "T", 5), (5, 12), (3, 12), (8,)], {}, "bias must have shape (12,)"),
    ([*LSTM_OK, (2, 3)], {}, "takes 2 initial state tensor(s) or none, got 1"),
    ([*LSTM_OK, (2, 3), (2, 4)], {}, "initial state 1 must have shape (2, 3)"),
    ([*LSTM_OK, (3, 3), (3, 3)], {}, "initial state 0 must have shape (2, 3)"),
    ([*LSTM_OK, (2, 3), (2, 3, 1)], {}, "initial state 1"),
    (LSTM_OK, {"activation": "softmax"}, "lstm activation 'softmax' is not one of"),
    (LSTM_OK, {"recurrent_activation": "nope"}, "recurrent_activation 'nope'"),
])
def test_lstm_shape_errors(shapes, attrs, message):
    opdef = get("lstm")
    with pytest.raises(ShapeError) as err:
        opdef.infer_types(_types(*shapes), opdef.resolve_attrs({**LSTM_ATTRS, **attrs}))
    assert message in str(err.value)


def test_recurrent_dtype_and_arity_errors():
    opdef = get("lstm")
    attrs = opdef.resolve_attrs({})
    with pytest.raises(ShapeError, match="lstm input must be a float tensor, got int32"):
        opdef.infer_types([TensorType("int32", (2, 3, 5))] + _types(*LSTM_OK[1:]), attrs)
    with pytest.raises(ShapeError, match="different dtypes"):
        opdef.infer_types([TensorType("float64", (2, 3, 5))] + _types(*LSTM_OK[1:]), attrs)
    with pytest.raises(ShapeError, match="takes 4 to 8 inputs, got 3"):
        opdef.infer_types(_types(*LSTM_OK[:3]), attrs)
    gru = get("gru")
    with pytest.raises(ShapeError, match=r"gru bias must have shape \(2, 9\)"):
        gru.infer_types(_types((2, 4, 5), (5, 9), (3, 9), (9,)), gru.resolve_attrs({}))
    with pytest.raises(ShapeError, match=r"gru bias must have shape \(9,\)"):
        gru.infer_types(_types((2, 4, 5), (5, 9), (3, 9), (2, 9)), gru.resolve_attrs({"reset_after": False}))
    with pytest.raises(ShapeError, match=r"gru takes 1 initial state tensor\(s\) or none, got 2"):
        gru.infer_types(_types((2, 4, 5), (5, 9), (3, 9), (2, 9), (2, 3), (2, 3)), gru.resolve_attrs({}))
    rnn = get("simple_rnn")
    with pytest.raises(ValueError, match="has no attribute"):
        rnn.resolve_attrs({"recurrent_activation": "sigmoid"})
    with pytest.raises(ShapeError, match="simple_rnn activation 'x'"):
        rnn.infer_types(_types((2, 4, 5), (5, 3), (3, 3), (3,)), rnn.resolve_attrs({"activation": "x"}))


def test_builder_error_names_the_layer():
    g = Graph("g")
    x = g.add_input("x", TensorType("float32", (2, 5)))
    w = g.add_constant("w", np.zeros((5, 12), "float32"))
    r = g.add_constant("r", np.zeros((3, 12), "float32"))
    b = g.add_constant("b", np.zeros((12,), "float32"))
    with pytest.raises(ShapeError, match="layer 'enc'.*rank 3"):
        OpBuilder(g, "enc").lstm(x, w, r, b)


def test_activation_table_is_the_elementwise_one():
    assert "linear" in ACTIVATIONS and "tanh" in ACTIVATIONS and "hard_sigmoid" in ACTIVATIONS
    assert get("lstm").num_outputs == 3 and get("gru").num_outputs == 2 and get("simple_rnn").num_outputs == 2
