"""Data-movement, matrix and reduction ops: shape rules (static and symbolic) and values."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference import run
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder, ShapeError
from graphc.ops.shape_ops import infer_reshape


def graph_of(*types):
    g = Graph()
    names = [g.add_input(f"x{i}", TensorType(*t)) for i, t in enumerate(types)]
    return g, OpBuilder(g, layer="probe"), names


def evaluate(g, out, feeds):
    g.set_outputs([out])
    return run(g, feeds)[out]


# ---------------------------------------------------------------- shape rules
@pytest.mark.parametrize("in_shape,target,want", [
    ((6, 7), (-1,), (42,)),
    ((6, 7), (3, -1), (3, 14)),
    (("batch", 7, 7, 64), ("batch", 3136), ("batch", 3136)),
    (("batch", 7, 7, 64), (-1, 3136), ("batch", 3136)),
    (("batch", "t", 5), (-1, 5), ("batch*t", 5)),
    (("batch*t", 10), ("batch", "t", 10), ("batch", "t", 10)),
    (("batch", 20, 784), (-1, 784), ("20*batch", 784)),
])
def test_reshape_inference(in_shape, target, want):
    assert infer_reshape(in_shape, target) == want


@pytest.mark.parametrize("in_shape,target,match", [
    ((6, 7), (5, -1), "cannot reshape"),
    ((6, 7), (5, 8), "42 elements"),
    ((6, 7), (-1, -1), "more than one -1"),
    ((6, 7), (-3, 14), "negative"),
])
def test_reshape_errors(in_shape, target, match):
    with pytest.raises(ShapeError, match=match):
        infer_reshape(in_shape, target)


def test_reshape_with_symbolic_target_runs_with_bound_dims(rng):
    g, b, (x,) = graph_of(("float32", ("batch", "x0_len", 3)))
    flat = b.reshape(x, shape=(-1, 3))
    back = b.reshape(flat, shape=("batch", "x0_len", 3))
    assert g.type_of(back).shape == ("batch", "x0_len", 3)
    data = rng.normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(evaluate(g, back, {"x0": data}), data)


def test_transpose_concat_slice_expand_squeeze(rng):
    g, b, (x, y) = graph_of(("float32", ("batch", 3, 7)), ("float32", ("batch", 3, 2)))
    t = b.transpose(x, perm=(0, 2, 1))
    assert g.type_of(t).shape == ("batch", 7, 3)
    c = b.concat(x, y, axis=-1)
    assert g.type_of(c).shape == ("batch", 3, 9)
    s = b.slice(c, axis=2, start=1, stop=8, step=3)
    assert g.type_of(s).shape == ("batch", 3, 3)
    e = b.expand_dims(s, axis=1)
    assert g.type_of(e).shape == ("batch", 1, 3, 3)
    q = b.squeeze(e, axis=1)
    xs, ys = rng.normal(size=(3, 3, 7)).astype(np.float32), rng.normal(size=(3, 3, 2)).astype(np.float32)
    g.set_outputs([t, q])
    out = run(g, {"x0": xs, "x1": ys})
    np.testing.assert_array_equal(out[t], xs.transpose(0, 2, 1))
    np.testing.assert_array_equal(out[q], np.concatenate([xs, ys], -1)[:, :, 1:8:3])


def test_slice_of_a_symbolic_axis():
    g, b, (x,) = graph_of(("float32", ("batch", "n")))
    assert g.type_of(b.slice(x, axis=1, start=2, stop=9)).shape == ("batch", 7)
    assert g.type_of(b.slice(x, axis=1, start=-3)).shape == ("batch", 3)  # n - (n - 3), folded
    assert g.type_of(b.slice(x, axis=1, start=1, stop=-2)).shape == ("batch", "n - 3")


def test_shape_op_errors_name_the_layer():
    g, b, (x, y) = graph_of(("float32", (3, 7)), ("float32", (4, 5)))
    with pytest.raises(ShapeError, match="layer 'probe'.*matching shapes"):
        b.concat(x, y, axis=1)
    with pytest.raises(ShapeError, match="not a permutation"):
        b.transpose(x, perm=(0, 0))
    with pytest.raises(ShapeError, match="out of range"):
        b.concat(x, x, axis=2)
    with pytest.raises(ShapeError, match="cannot squeeze axis 1 of size 7"):
        b.squeeze(x, axis=1)


def test_gather_rows_and_errors(rng):
    g, b, (table, ids) = graph_of(("float32", (17, 3)), ("int64", ("batch", "len")))
    out = b.gather(table, ids)
    assert g.type_of(out).shape == ("batch", "len", 3)
    t = rng.normal(size=(17, 3)).astype(np.float32)
    i = rng.integers(0, 17, size=(2, 5))
    np.testing.assert_array_equal(evaluate(g, out, {"x0": t, "x1": i}), t[i])
    with pytest.raises(Exception, match="index 17 is out of range for a table of 17 rows"):
        run(g, {"x0": t, "x1": np.full((1, 1), 17)})
    g2, b2, (t2, f) = graph_of(("float32", (17, 3)), ("float32", (4,)))
    with pytest.raises(ShapeError, match="indices must be integers"):
        b2.gather(t2, f)


# ---------------------------------------------------------------- linalg
@pytest.mark.parametrize("a_shape,b_shape", [((1, 3), (3, 1)), ((7, 17), (17, 3)), ((2, 5, 7), (7, 3)),
                                             ((4, 3, 5), (4, 5, 2)), ((3, 5), (2, 5, 4))])
def test_matmul(a_shape, b_shape, rng):
    a = rng.normal(size=a_shape).astype(np.float32)
    w = rng.normal(size=b_shape).astype(np.float32)
    g, b, (x, y) = graph_of(("float32", a_shape), ("float32", b_shape))
    np.testing.assert_allclose(evaluate(g, b.matmul(x, y), {"x0": a, "x1": w}),
                               np.einsum("...ik,...kj->...ij", a, w) if len(b_shape) > 2 else a @ w,
                               rtol=1e-5, atol=1e-5)


def test_matmul_and_bias_add_errors():
    g, b, (x, w, bias) = graph_of(("float32", ("batch", 7)), ("float32", (6, 3)), ("float32", (4,)))
    with pytest.raises(ShapeError, match=r"contraction mismatch.*\(7 != 6\)"):
        b.matmul(x, w)
    with pytest.raises(ShapeError, match="bias of shape"):
        b.bias_add(x, bias)


def test_bias_add_on_any_axis(rng):
    g, b, (x, bias) = graph_of(("float32", (2, 3, 5)), ("float32", (3,)))
    xs, bs = rng.normal(size=(2, 3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    np.testing.assert_allclose(evaluate(g, b.bias_add(x, bias, axis=1), {"x0": xs, "x1": bs}),
                               xs + bs[None, :, None])


# ---------------------------------------------------------------- reductions
@pytest.mark.parametrize("op,fn", [("reduce_sum", np.sum), ("reduce_mean", np.mean), ("reduce_max", np.max),
                                   ("reduce_min", np.min)])
@pytest.mark.parametrize("axes,keepdims", [((1,), False), ((-1,), True), ((0, 2), False)])
def test_reductions(op, fn, axes, keepdims, rng):
    xs = rng.normal(size=(3, 7, 1)).astype(np.float32)
    g, b, (x,) = graph_of(("float32", (3, 7, 1)))
    out = b.emit(op, x, axes=axes, keepdims=keepdims)
    got = evaluate(g, out, {"x0": xs})
    np.testing.assert_allclose(got, fn(xs, axis=axes, keepdims=keepdims), rtol=1e-6)
    assert got.shape == g.type_of(out).shape


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax_log_softmax_l2_normalize(axis, rng):
    xs = rng.normal(0, 5, size=(3, 17)).astype(np.float32)
    g, b, (x,) = graph_of(("float32", (3, 17)))
    sm, lsm, l2 = b.softmax(x, axis=axis), b.log_softmax(x, axis=axis), b.l2_normalize(x, axis=axis)
    g.set_outputs([sm, lsm, l2])
    out = run(g, {"x0": xs})
    x64 = xs.astype(np.float64)
    e = np.exp(x64 - x64.max(axis, keepdims=True))
    want = e / e.sum(axis, keepdims=True)
    np.testing.assert_allclose(out[sm], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[lsm], np.log(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[l2], x64 / np.linalg.norm(x64, axis=axis, keepdims=True), rtol=1e-5)


def test_softmax_is_stable_for_huge_logits():
    g, b, (x,) = graph_of(("float32", (1, 3)))
    out = evaluate(g, b.softmax(x), {"x0": np.array([[1e4, 1e4, -1e4]], np.float32)})
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]])


def test_argmax(rng):
    xs = rng.normal(size=(3, 7)).astype(np.float32)
    g, b, (x,) = graph_of(("float32", (3, 7)))
    out = b.argmax(x, axis=1)
    assert g.type_of(out) == TensorType("int64", (3,))
    np.testing.assert_array_equal(evaluate(g, out, {"x0": xs}), xs.argmax(1))
