"""Gradients of operands broadcast along free dims that are 1 at run time.

``x`` of shape ``(a, 7)`` added to ``y`` of shape ``(3, 7)`` is broadcast along ``a`` exactly when
``a`` is 1, which the backward graph cannot know when it is built: ``dL/dx`` is then the sum of
the output's cotangent over that axis (the ``sum_to`` op decides at run time). Every
broadcasting binary op's gradients, on operand shapes mixing fixed dims, free dims and 1s, are
compared at every binding of the free dims to 1, 2, 3 and 7 at which NumPy broadcasting is
defined: native code == the reference interpreter (same float32 graph), and the float64
reference == central differences of the op's NumPy oracle. Then the ``sum_to`` op itself and
the run-time element-count check of native reshapes, which used to copy the wrong number of
elements silently.

Each case has free dims of its own (``c3_a``...), so one graph holds every case and one run binds
each case's dims to one of its valid combinations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from graphc.autodiff import gradients
from graphc.backends.reference.interpreter import OpExecutionError
from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import REGISTRY, OpBuilder
from graphc.ops.registry import ShapeError
from graphc.runtime import NativeError
from tests.backends.llvm.helpers import load, run_native

SIZES = (1, 2, 3, 7)


@dataclass
class In:
    """An op input: its shape (``"a"``/``"b"`` are the case's free dims) and how it is drawn."""

    shape: tuple
    draw: str = "normal"  # normal | positive | bool (a where condition, not differentiated)


@dataclass
class Case:
    id: str
    op: str
    inputs: list[In]
    attrs: dict = field(default_factory=dict)
    free: list[str] = field(default_factory=list)  # the case's free dims, once renamed


PAIRS = [  # (x, y): fixed dims, free dims and 1s
    (("a", 7), (3, 7)),  # the reported case: dL/dx at a = 1 is the sum over the 3 rows
    ((3, 7), ("a", 7)),
    (("a", 1, 7), ("a", 3, 7)),
    (("a", 7), ("b", 7)),
    (("a", 1, 7), (1, "b", 7)),
    (("a", "b"), ("b",)),
    (("a", "b"), ("a", 1)),
    ((1, "a", 4), ("b", 1, 4)),
    (("a",), (6, "b")),
    (("a", 3, "b"), (3, 1)),
    ((5, "a"), (5, 9)),
    (("a", 1), (1, "a")),
]
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow")


def _cases() -> list[Case]:
    cases: list[Case] = []

    def case(name, op, *inputs, **attrs):
        cases.append(Case(f"c{len(cases)}_{name}", op, list(inputs), attrs))

    for i, (x, y) in enumerate(PAIRS):
        for op in BINARY:
            case(f"{op}{i}", op, In(x, "positive" if op == "pow" else "normal"),
                 In(y, "positive" if op == "div" else "normal"))
        case(f"where{i}", "where", In((1,), "bool"), In(x), In(y))
        case(f"where_cond{i}", "where", In(x, "bool"), In(y), In((1,)))
    case("where3", "where", In(("a", 1, 7), "bool"), In(("b", 1)), In((3, 1)))
    case("bias_add_free_bias", "bias_add", In((2, 7)), In(("a",)), axis=-1)
    case("bias_add_free_bias_rank3", "bias_add", In((3, 2, 5)), In(("a",)), axis=1)
    case("bias_add_axis1", "bias_add", In(("a", 4, "b")), In((4,)), axis=1)
    case("bias_add_free_axis", "bias_add", In(("a", "b", 3)), In(("b",)), axis=1)
    return cases


CASES = _cases()


def _renamed(shape: tuple, prefix: str) -> tuple:
    return tuple(f"{prefix}_{d}" if isinstance(d, str) else d for d in shape)


def _loss(ob: OpBuilder, out: str, rank: int) -> str:
    """sum(out ** 2): a cotangent that differs between the elements summed together."""
    return ob.reduce_sum(ob.square(out), axes=tuple(range(rank)))


def build(cases: list[Case], dtype: str, name: str) -> tuple[Graph, dict[str, tuple[Case, int]], list[str]]:
    """One graph: every case's op, the total of their losses, the gradient of each float input.

    Returns the graph (outputs: the loss, then the gradients), each input's (case, position)
    and the differentiated inputs in the order of their gradients.
    """
    g = Graph(name)
    where: dict[str, tuple[Case, int]] = {}
    losses, wrt = [], []
    for c in cases:
        names = []
        for i, spec in enumerate(c.inputs):
            t = TensorType("bool" if spec.draw == "bool" else dtype, _renamed(spec.shape, c.id))
            v = g.add_input(f"{c.id}_in{i}", t)
            where[v] = (c, i)
            names.append(v)
            if spec.draw != "bool":
                wrt.append(v)
        c.free = sorted({f"{c.id}_{d}" for s in c.inputs for d in s.shape if isinstance(d, str)})
        ob = OpBuilder(g, layer=c.id)
        out = ob.emit(c.op, *names, **c.attrs)
        losses.append(_loss(ob, out, g.type_of(out).rank))
    ob = OpBuilder(g)
    total = losses[0] if len(losses) == 1 else ob.add_n(*losses)
    grads = gradients(g, total, wrt)
    g.set_outputs([total] + [grads[w] for w in wrt])
    return g, where, wrt


def draw_feeds(graph: Graph, where: dict, sizes: dict[str, int], rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name in graph.inputs:
        c, i = where[name]
        spec = c.inputs[i]
        shape = graph.type_of(name).concrete_shape(sizes)
        if spec.draw == "bool":
            feeds[name] = rng.random(shape) < 0.5
        elif spec.draw == "positive":
            feeds[name] = rng.uniform(0.5, 2.0, size=shape)
        else:
            feeds[name] = rng.standard_normal(shape)
    return feeds


def valid_bindings(case: Case) -> list[dict[str, int]]:
    """Bindings of the case's free dims to SIZES at which NumPy broadcasting is defined and
    gives the shape rule's output shape (one with a free dim of 1 among them)."""
    found = []
    free = sorted({d for s in case.inputs for d in s.shape if isinstance(d, str)})
    out_type = REGISTRY[case.op].infer_types(
        [TensorType("bool" if s.draw == "bool" else "float64", s.shape) for s in case.inputs],
        REGISTRY[case.op].resolve_attrs(case.attrs))[0]
    for values in itertools.product(SIZES, repeat=len(free)):
        sizes = dict(zip(free, values))
        arrays = [np.ones(tuple(dims.evaluate(d, sizes) for d in s.shape), bool if s.draw == "bool" else float)
                  for s in case.inputs]
        try:
            out = REGISTRY[case.op].reference(*arrays, **REGISTRY[case.op].resolve_attrs(case.attrs))
        except ValueError:
            continue
        if out.shape == tuple(dims.evaluate(d, sizes) for d in out_type.shape):
            found.append({f"{case.id}_{k}": v for k, v in sizes.items()})
    assert found, f"{case.id}: no binding of {free} to {SIZES} broadcasts"
    assert not free or any(1 in s.values() for s in found), f"{case.id}: never run with a free dim of 1"
    return found


def runs(cases: list[Case], rng) -> list[dict[str, int]]:
    """Bindings of every case's free dims so that each case runs at each of its valid bindings."""
    per_case = []
    for c in cases:
        found = valid_bindings(c)
        rng.shuffle(found)
        per_case.append(sorted(found, key=lambda s: 1 not in s.values()))  # a free dim of 1 first
    n = max(len(b) for b in per_case)
    return [{k: v for b in per_case for k, v in b[r % len(b)].items()} for r in range(n)]


def _label(c: Case, name: str, sizes: dict) -> str:
    return (f"{c.id}: d/d{name} of {c.op}{tuple(s.shape for s in c.inputs)} at "
            f"{ {d[len(c.id) + 1:]: sizes[d] for d in c.free} }")


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def _check_finite_differences(c: Case, name: str, feeds: dict, where: dict, grad: np.ndarray, sizes: dict,
                              rng, h: float = 1e-6) -> None:
    """<grad, v> == (f(x + h v) - f(x - h v)) / 2h, f = sum(op(...) ** 2) from the op's NumPy oracle."""
    ref = REGISTRY[c.op].reference
    attrs = REGISTRY[c.op].resolve_attrs(c.attrs)
    pos = where[name][1]
    ins = [f"{c.id}_in{i}" for i in range(len(c.inputs))]

    def f(x):
        arrays = [x if i == pos else feeds[n] for i, n in enumerate(ins)]
        return float(np.sum(np.square(ref(*arrays, **attrs))))

    x = feeds[name]
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        numeric = (f(x + h * v) - f(x - h * v)) / (2 * h)
        analytic = float(np.sum(grad * v))
        assert np.isclose(analytic, numeric, rtol=1e-6, atol=1e-6), (
            f"{_label(c, name, sizes)}: the reference gradient gives {analytic} along a random direction, "
            f"central differences {numeric}")


def test_every_broadcasting_binary_op_is_covered():
    covered = {c.op for c in CASES}
    assert {"add", "sub", "mul", "div", "maximum", "minimum", "pow", "where", "bias_add"} <= covered


def test_the_reported_case_sums_over_the_broadcast_axis():
    """loss = sum(x + y), x (a, 7), y (3, 7), at a = 1: dL/dx is 3 everywhere, not 1."""
    g = Graph("reported")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("a", 7)))
    y = g.add_input("y", TensorType("float32", (3, 7)))
    loss = ob.reduce_sum(ob.add(x, y), axes=(0, 1))
    grads = gradients(g, loss, [x, y])
    g.set_outputs([grads[x], grads[y]])
    lib = load(g)
    for a in (1, 3):
        feeds = {"x": np.ones((a, 7), np.float32), "y": np.ones((3, 7), np.float32)}
        want_dx = np.full((a, 7), 3.0 if a == 1 else 1.0, np.float32)
        dx, dy = run_native(lib, feeds)
        np.testing.assert_array_equal(dx, want_dx)
        np.testing.assert_array_equal(dy, np.ones((3, 7), np.float32))
        np.testing.assert_array_equal(reference_run(g, feeds)[grads[x]], want_dx)


def test_gradients_against_free_dims_of_1(rng):
    g32, where, wrt = build(CASES, "float32", "unbroadcast_free_f32")
    g64, _, _ = build(CASES, "float64", "unbroadcast_free_f64")
    lib = load(g32)
    for sizes in runs(CASES, rng):
        feeds = draw_feeds(g64, where, sizes, rng)
        feeds32 = {n: a if a.dtype == bool else a.astype(np.float32) for n, a in feeds.items()}
        want32 = reference_run(g32, feeds32)
        want64 = reference_run(g64, feeds)
        got = dict(zip(g32.outputs, run_native(lib, feeds32)))
        for name, g_name, g64_name in zip(wrt, g32.outputs[1:], g64.outputs[1:]):
            c, _ = where[name]
            label = _label(c, name, sizes)
            _close(got[g_name], want32[g_name], f"native vs reference, {label}")
            _check_finite_differences(c, name, feeds, where, want64[g64_name], sizes, rng)


# ---------------------------------------------------------------------------- sum_to


def _sum_to_graph(x_shape, like_shape):
    g = Graph("sum_to")
    x = g.add_input("x", TensorType("float32", x_shape))
    like = g.add_input("like", TensorType("float32", like_shape))
    g.set_outputs([OpBuilder(g, layer="grad_of_add").sum_to(x, like)])
    return g


@pytest.mark.parametrize("x_shape, like_shape, bindings", [
    ((3, 7), ("a", 7), [{"a": 1}, {"a": 3}]),
    ((2, 3, 7), ("a", 1), [{"a": 1}, {"a": 3}]),
    ((4, "b", 5), ("a", "b", 1), [{"a": 1, "b": 2}, {"a": 4, "b": 1}, {"a": 4, "b": 3}]),
    ((2, "b", 6), ("a", 1, 6), [{"a": 1, "b": 1}, {"a": 1, "b": 7}, {"a": 2, "b": 3}]),
    ((5, "b"), (5, "a"), [{"a": 1, "b": 3}, {"a": 3, "b": 3}, {"a": 1, "b": 1}]),
    ((3, 7), ("a", "b"), [{"a": 1, "b": 1}, {"a": 3, "b": 1}, {"a": 1, "b": 7}, {"a": 3, "b": 7}]),
    ((3, 7), (3, 7), [{}]),
])
def test_sum_to_native_equals_the_reference(x_shape, like_shape, bindings, rng):
    g = _sum_to_graph(x_shape, like_shape)
    assert g.type_of(g.outputs[0]).shape == like_shape
    lib = load(g)
    for sizes in bindings:
        x = rng.standard_normal(tuple(dims.evaluate(d, sizes) for d in x_shape)).astype(np.float32)
        like = np.zeros(tuple(dims.evaluate(d, sizes) for d in like_shape), np.float32)
        want = reference_run(g, {"x": x, "like": like})[g.outputs[0]]
        lead = x.ndim - like.ndim
        numpy = x.sum(axis=tuple(range(lead)))
        numpy = numpy.sum(axis=tuple(i for i, t in enumerate(like.shape) if t == 1), keepdims=True)
        np.testing.assert_allclose(want, numpy.reshape(like.shape), rtol=1e-6)
        (got,) = run_native(lib, {"x": x, "like": like})
        _close(got, want, f"sum_to {x_shape} -> {like_shape} at {sizes}")


def test_sum_to_refuses_a_target_that_does_not_broadcast():
    with pytest.raises(ShapeError, match=r"\(4, 7\) does not broadcast to \(3, 7\)"):
        _sum_to_graph((3, 7), (4, 7))
    g = _sum_to_graph((3, 7), ("a", 7))
    x, like = np.ones((3, 7), np.float32), np.ones((2, 7), np.float32)
    with pytest.raises(OpExecutionError, match=r"cannot sum an array of shape \(3, 7\) to shape \(2, 7\)"):
        reference_run(g, {"x": x, "like": like})
    with pytest.raises(NativeError, match=r"layer 'grad_of_add'.*cannot sum \(3, 7\) to \(a, 7\).*dimension is 2"):
        run_native(load(g), {"x": x, "like": like})


def test_unbroadcast_keeps_static_reductions_where_every_dim_is_known():
    """sum_to only where a free dim decides; known axes stay plain reduce_sum ops."""
    def ops_of(x_shape, y_shape):
        g = Graph("static")
        ob = OpBuilder(g)
        x = g.add_input("x", TensorType("float32", x_shape))
        y = g.add_input("y", TensorType("float32", y_shape))
        loss = ob.reduce_sum(ob.add(x, y), axes=tuple(range(max(len(x_shape), len(y_shape)))))
        gradients(g, loss, [x, y])
        return [op.type for op in g.ops()]

    assert "sum_to" not in ops_of(("batch", 1, 7), ("batch", 3, 7))
    assert "sum_to" not in ops_of((3, 7), (7,))
    assert "sum_to" in ops_of(("a", 7), (3, 7))
    assert "sum_to" in ops_of(("a", 7), ("b", 7))


def test_sum_to_gradient_broadcasts_back(rng):
    g = Graph("sum_to_vjp")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float64", (2, 3, 7)))
    like = g.add_constant("like", np.zeros((3, 1)))
    w = ob.constant(rng.standard_normal((3, 1)))
    loss = ob.reduce_sum(ob.mul(ob.sum_to(x, like), w), axes=(0, 1))
    grads = gradients(g, loss, [x])
    g.set_outputs([grads[x]])
    got = reference_run(g, {"x": rng.standard_normal((2, 3, 7))})[grads[x]]
    np.testing.assert_allclose(got, np.broadcast_to(g.constants[w], (2, 3, 7)), rtol=1e-12)


# ---------------------------------------------------------------------------- reshape counts


def _reshape_graph(layer: str, build, *shapes) -> Graph:
    g = Graph(layer)
    ob = OpBuilder(g, layer=layer)
    ins = [g.add_input(f"x{i}", TensorType("float32", shape)) for i, shape in enumerate(shapes)]
    g.set_outputs([ob.mul(build(ob, *ins), ob.constant(np.float32(2)))])
    return g


def test_native_reshape_checks_the_element_count(rng):
    """A reshape whose target size is an expression over free dims fails, naming the layer and the
    shapes, at sizes where the counts differ (it used to copy the wrong number of elements)."""
    pairs = _reshape_graph("flatten_pairs", lambda ob, x: ob.reshape(x, shape=(-1, 4)), ("a", 6))
    lib = load(pairs)
    for a in (2, 4):  # (a * 6 // 4, 4) holds a * 6 elements
        x = rng.standard_normal((a, 6)).astype(np.float32)
        (got,) = run_native(lib, {"x0": x})
        np.testing.assert_array_equal(got, 2 * x.reshape(-1, 4))
    for a, n in ((1, 4), (3, 16)):
        x = np.ones((a, 6), np.float32)
        with pytest.raises(NativeError, match=rf"layer 'flatten_pairs'.*cannot reshape \(a, 6\) \(6\*a elements\) "
                                              rf"to \(a \+ a // 2, 4\) .* = {n} elements at these input sizes"):
            run_native(lib, {"x0": x})
        with pytest.raises(OpExecutionError, match="cannot reshape"):
            reference_run(pairs, {"x0": x})

    rows = _reshape_graph("match_rows", lambda ob, y, x: ob.mul(ob.reshape(y, shape=("a", 7)),
                                                                ob.expand_dims(x, axis=1)), (3, 7), ("a",))
    lib = load(rows)
    y = rng.standard_normal((3, 7)).astype(np.float32)
    (got,) = run_native(lib, {"x0": y, "x1": np.ones(3, np.float32)})
    np.testing.assert_allclose(got, 2 * y, rtol=1e-6)
    for a in (1, 2, 7):
        with pytest.raises(NativeError, match=rf"layer 'match_rows'.*cannot reshape \(3, 7\) \(21 elements\) to "
                                              rf"\(a, 7\) \(7\*a = {7 * a} elements"):
            run_native(lib, {"x0": y, "x1": np.ones(a, np.float32)})

    squeeze = _reshape_graph("drop_axis", lambda ob, x: ob.squeeze(x, axis=0), ("a", 7))
    lib = load(squeeze)
    (got,) = run_native(lib, {"x0": np.ones((1, 7), np.float32)})
    np.testing.assert_array_equal(got, np.full(7, 2, np.float32))
    with pytest.raises(NativeError, match=r"layer 'drop_axis'.*cannot reshape \(a, 7\)"):
        run_native(lib, {"x0": np.ones((3, 7), np.float32)})
