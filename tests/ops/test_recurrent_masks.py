"""Masked recurrences and recurrent dropout on the lstm, gru and simple_rnn ops, on every backend.

Keras's masked semantics are checked independently of the op's formulas: per sample, running
the unmasked recurrence over the kept steps alone gives the final state and, step by step,
the outputs of the kept steps; a masked step repeats the previous output (zeros before the
first kept step), or gives zeros with ``zero_output_for_mask``. Gradients are checked against
central differences; the ONNX export and the native kernels (forward and backward) against
the reference, with masks that keep everything, leave gaps, pad at either end, or mask a whole
sequence.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.autodiff import gradients
from graphc.backends.onnx import verify_graph
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.autodiff.gradcheck import Arg, Case, check_case
from tests.backends.llvm.helpers import assert_matches_reference, load

GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
N_STATES = {"lstm": 2, "gru": 1, "simple_rnn": 1}


def _bias_shape(op: str, u: int, reset_after: bool = True) -> tuple:
    return (2, 3 * u) if op == "gru" and reset_after else (GATES[op] * u,)


def _masks(n: int, t: int) -> np.ndarray:
    """Rows: all kept, a gap and a padded tail, all masked, padded head; then random."""
    rng = np.random.default_rng(n * 31 + t)
    m = (rng.random((n, t)) < 0.6).astype("float32")
    patterns = [np.ones(t), np.r_[1, 0, np.ones(max(t - 4, 0)), 0, 0][:t], np.zeros(t),
                np.r_[np.zeros(t // 2), np.ones(t - t // 2)]]
    for i, p in enumerate(patterns[:n]):
        m[i] = p
    return m


def _one_op(op, arrays, **attrs):
    g = Graph(op)
    names = [g.add_input(f"in{i}", TensorType(a.dtype.name, a.shape)) for i, a in enumerate(arrays)]
    outs = OpBuilder(g, "rnn").emit(op, *names, **attrs)
    g.set_outputs(list(outs))
    res = run(g, dict(zip(names, arrays)))
    return [res[o] for o in outs]


# ---------------------------------------------------------------- semantics
@pytest.mark.parametrize("op", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_masked_steps_are_skipped_as_keras_does(op, go_backwards, zero_output, with_state, rng):
    n, t, f, u = 4, 7, 3, 5
    x = rng.normal(size=(n, t, f)).astype("float32")
    w = rng.normal(scale=0.5, size=(f, GATES[op] * u)).astype("float32")
    r = rng.normal(scale=0.5, size=(u, GATES[op] * u)).astype("float32")
    b = rng.normal(scale=0.5, size=_bias_shape(op, u)).astype("float32")
    states = [rng.normal(size=(n, u)).astype("float32") for _ in range(N_STATES[op])] if with_state else []
    mask = _masks(n, t)
    attrs = {"go_backwards": go_backwards, "return_sequences": True}
    seq, *final = _one_op(op, [x, w, r, b, *states, mask], masked=True, zero_output_for_mask=zero_output, **attrs)
    last, *_ = _one_op(op, [x, w, r, b, *states, mask], masked=True, zero_output_for_mask=zero_output,
                       go_backwards=go_backwards)
    for i in range(n):
        order = list(range(t))[::-1] if go_backwards else list(range(t))
        kept = [s for s in order if mask[i, s]]
        init = [s[i:i + 1] for s in states]
        if kept:
            sub_seq, *sub_final = _one_op(op, [x[i:i + 1, kept], w, r, b, *init], return_sequences=True)
        else:
            sub_seq = np.zeros((1, 0, u), "float32")
            sub_final = init or [np.zeros((1, u), "float32")] * N_STATES[op]
        for got, want in zip(final, sub_final):
            np.testing.assert_allclose(got[i], want[0], rtol=1e-5, atol=1e-6)
        count, prev = 0, np.zeros(u, "float32")
        for step, s in enumerate(order):
            if mask[i, s]:
                prev = sub_seq[0, count]
                count += 1
                want = prev
            else:
                want = np.zeros(u, "float32") if zero_output else prev
            np.testing.assert_allclose(seq[i, step], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"sample {i}, output step {step}")
        np.testing.assert_allclose(last[i], seq[i, -1], rtol=1e-6, atol=1e-7)


def test_recurrent_dropout_multiplies_the_state_feeding_each_gate(rng):
    n, t, f, u = 3, 4, 2, 3
    x = rng.normal(size=(n, t, f)).astype("float32")
    w = rng.normal(size=(f, 4 * u)).astype("float32")
    r = rng.normal(size=(u, 4 * u)).astype("float32")
    b = rng.normal(size=(4 * u,)).astype("float32")
    drop = (rng.random((n, 4 * u)) < 0.7).astype("float32") / 0.7
    seq, h, c = _one_op("lstm", [x, w, r, b, drop], recurrent_dropout=True, return_sequences=True)
    hp, cp = np.zeros((n, u), "float32"), np.zeros((n, u), "float32")
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for s in range(t):
        z = x[:, s] @ w + b + np.concatenate([(hp * drop[:, g * u:(g + 1) * u]) @ r[:, g * u:(g + 1) * u]
                                              for g in range(4)], axis=1)
        i, fg, g_, o = sig(z[:, :u]), sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sig(z[:, 3 * u:])
        cp = fg * cp + i * g_
        hp = o * np.tanh(cp)
        np.testing.assert_allclose(seq[:, s], hp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, cp, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,attrs,shape,message", [
    ("lstm", {"masked": True}, (3, 5), "mask must have shape"),
    ("gru", {"masked": True}, (3,), "mask must have shape"),
    ("simple_rnn", {"recurrent_dropout": True}, (3, 7), "recurrent dropout multipliers must have shape"),
])
def test_bad_mask_or_dropout_inputs_are_refused(op, attrs, shape, message):
    from graphc.ops import ShapeError

    g = Graph("bad")
    u = 2
    x = g.add_input("x", TensorType("float32", (3, 4, 2)))
    w = g.add_constant("w", np.zeros((2, GATES[op] * u), "float32"))
    r = g.add_constant("r", np.zeros((u, GATES[op] * u), "float32"))
    b = g.add_constant("b", np.zeros(_bias_shape(op, u), "float32"))
    extra = g.add_input("extra", TensorType("float32", shape))
    with pytest.raises(ShapeError, match=message):
        OpBuilder(g, "rnn").emit(op, x, w, r, b, extra, **attrs)


# ---------------------------------------------------------------- gradients
def _grad_cases() -> list[Case]:
    n, t, f, u = 3, 5, 2, 3
    mask = _masks(n, t).astype("float64")
    cases = []
    for op in ("lstm", "gru", "simple_rnn"):
        for seq in (False, True):
            for back in (False, True):
                for zero in (False, True):
                    states = [Arg((n, u)) for _ in range(N_STATES[op])] if back else []
                    args = [Arg((n, t, f)), Arg((f, GATES[op] * u)), Arg((u, GATES[op] * u)),
                            Arg(_bias_shape(op, u)), *states, Arg((n, t), draw="const", differentiate=False,
                                                                  value=mask)]
                    cases.append(Case(op, args, {"masked": True, "return_sequences": seq, "go_backwards": back,
                                                 "zero_output_for_mask": zero},
                                      id=f"{op}_mask_seq{int(seq)}_back{int(back)}_zero{int(zero)}"))
        drop = (np.random.default_rng(3).random((n, GATES[op] * u)) < 0.7) / 0.7
        args = [Arg((n, t, f)), Arg((f, GATES[op] * u)), Arg((u, GATES[op] * u)), Arg(_bias_shape(op, u)),
                Arg((n, t), draw="const", differentiate=False, value=mask),
                Arg((n, GATES[op] * u), draw="const", differentiate=False, value=drop)]
        cases.append(Case(op, args, {"masked": True, "recurrent_dropout": True, "return_sequences": True},
                          id=f"{op}_mask_recurrent_dropout"))
    args = [Arg((n, t, f)), Arg((f, 9)), Arg((u, 9)), Arg((9,)), Arg((n, u)),
            Arg((n, t), draw="const", differentiate=False, value=mask),
            Arg((n, 9), draw="const", differentiate=False, value=(np.arange(n * 9).reshape(n, 9) % 3 > 0) * 1.5)]
    cases.append(Case("gru", args, {"masked": True, "recurrent_dropout": True, "reset_after": False},
                      id="gru_reset_before_mask_recurrent_dropout"))
    return cases


@pytest.mark.parametrize("case", _grad_cases(), ids=lambda c: c.id)
def test_masked_gradients_match_central_differences(case, rng):
    check_case(case, rng)


# ---------------------------------------------------------------- ONNX and native
_VARIANTS = [  # (op, attrs, with initial state)
    ("lstm", {"return_sequences": True}, False),
    ("lstm", {"go_backwards": True}, True),
    ("lstm", {"return_sequences": True, "go_backwards": True, "zero_output_for_mask": True}, False),
    ("gru", {"return_sequences": True, "go_backwards": True}, True),
    ("gru", {"zero_output_for_mask": True}, False),
    ("gru", {"return_sequences": True, "reset_after": False}, False),
    ("simple_rnn", {"return_sequences": True, "zero_output_for_mask": True}, True),
    ("simple_rnn", {"go_backwards": True}, False),
]


def _masked_graph(with_gradients: bool) -> Graph:
    rng = np.random.default_rng(5)
    g = Graph("masked_rnns")
    b = OpBuilder(g, "rnn")
    f, u = 3, 6
    x = g.add_input("x", TensorType("float32", ("batch", "seq", f)))
    mask = g.add_input("mask", TensorType("float32", ("batch", "seq")))
    h0 = g.add_input("h0", TensorType("float32", ("batch", u)))
    outputs, losses, weights = [], [], []
    for k, (op, attrs, with_state) in enumerate(_VARIANTS):
        if with_gradients and not attrs.get("reset_after", True):
            continue  # no native backward kernel (refused by name)
        reset_after = attrs.get("reset_after", True)
        w = g.add_constant(f"rnn{k}/kernel", rng.normal(scale=0.5, size=(f, GATES[op] * u)).astype("float32"))
        r = g.add_constant(f"rnn{k}/recurrent", rng.normal(scale=0.5, size=(u, GATES[op] * u)).astype("float32"))
        bias = g.add_constant(f"rnn{k}/bias", rng.normal(scale=0.5, size=_bias_shape(op, u, reset_after))
                              .astype("float32"))
        weights += [w, r, bias]
        states = [h0] * N_STATES[op] if with_state else []
        outs = b.emit(op, x, w, r, bias, *states, mask, masked=True, **attrs)
        outputs += list(outs)
        for o in outs:
            losses.append(b.reduce_sum(b.mul(o, o), axes=tuple(range(g.type_of(o).rank))))
    if with_gradients:
        loss = b.add_n(*losses)
        grads = gradients(g, loss, ["x", "h0", *weights])
        g.set_outputs([grads[v] for v in ["x", "h0", *weights]])
    else:
        g.set_outputs(outputs)
    return g


def _feeds(n: int, t: int, rng) -> dict[str, np.ndarray]:
    return {"x": rng.normal(size=(n, t, 3)).astype("float32"), "mask": _masks(n, t),
            "h0": rng.normal(size=(n, 6)).astype("float32")}


def test_masked_recurrences_export_to_onnx(rng):
    graph = _masked_graph(with_gradients=False)
    for n, t in ((4, 7), (1, 5), (5, 1)):
        report = verify_graph(graph, _feeds(n, t, rng))
        assert report.ok, f"batch {n}, {t} steps\n{report}"


@pytest.mark.parametrize("with_gradients", [False, True], ids=["forward", "backward"])
def test_masked_recurrences_run_natively(with_gradients, rng):
    graph = _masked_graph(with_gradients)
    lib = load(graph, f"masked_rnns_{int(with_gradients)}")
    for n, t in ((4, 7), (1, 5), (13, 3)):
        assert_matches_reference(graph, lib, _feeds(n, t, rng), rtol=1e-4, atol=1e-4, threads=2,
                                 label=f"batch {n}, {t} steps")


def test_native_recurrent_dropout_is_refused_naming_the_option():
    from graphc.backends.llvm import NativeLoweringError

    g = Graph("rdrop")
    x = g.add_input("x", TensorType("float32", ("batch", 4, 2)))
    drop = g.add_input("drop", TensorType("float32", ("batch", 4 * 3)))
    w = g.add_constant("w", np.zeros((2, 12), "float32"))
    r = g.add_constant("r", np.zeros((3, 12), "float32"))
    b = g.add_constant("b", np.zeros(12, "float32"))
    g.set_outputs([OpBuilder(g, "my_lstm").emit("lstm", x, w, r, b, drop, recurrent_dropout=True)[0]])
    with pytest.raises(NativeLoweringError, match="my_lstm.*recurrent_dropout"):
        load(g, "rdrop")
