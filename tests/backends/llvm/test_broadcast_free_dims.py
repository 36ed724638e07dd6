"""Broadcasting against free dims that are 1 at run time: native code equals the reference.

A free dim (``batch``) is symbolic when the kernels are generated but may be bound to 1 when they
run, and then broadcasts: ``(batch, 7)`` read over ``(3, 7)``, ``(a, 7)`` against ``(b, 7)``.
Every broadcasting op (binary arithmetic, comparisons, ``where``, ``add_n``, ``bias_add``,
``scale_shift``, ``broadcast_like``, ``unary_grad``, batched ``matmul``, the product epilogues'
bias and residual, and the ``add`` the epilogue fusion leaves alone) is built on shapes mixing
fixed dims, free dims and 1s, compiled once (at optimization levels 0 and 2) and run at every
binding of the free dims to 1, 2, 3 and 7 for which NumPy broadcasting is defined. A property
test does the same for random broadcast-compatible shapes.

Each case has free dims of its own (``c12_a``...), so that one run binds each case's dims to one
of its own valid combinations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import optimize
from tests.backends.llvm.helpers import load, run_native

SIZES = (1, 2, 3, 7)
FREE = ("a", "b")


@dataclass
class In:
    """A graph input: its shape (``"a"``/``"b"`` are the case's free dims) and how it is drawn."""

    shape: tuple
    dtype: str = "float32"
    draw: str = "normal"  # normal | positive | ints (small integers: comparisons see ties) | bool


@dataclass
class Case:
    id: str
    build: object  # build(ob, *inputs) -> output value (ob: an OpBuilder)
    inputs: list[In]
    free: list[str] = field(default_factory=list)  # the case's free dims, once renamed


def _emit(op: str, **attrs):
    return lambda ob, *xs: ob.emit(op, *xs, **attrs)


def _w(seed: int, *shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


PAIRS = [  # (x, y): fixed dims, free dims and 1s
    (("a", 1, 7), ("a", 3, 7)),
    (("a", 7), (3, 7)),
    ((3, 7), ("a", 7)),
    ((5, "a"), (5, 9)),
    (("a", 7), ("b", 7)),
    (("a", 1, 7), (1, "b", 7)),
    (("a", "b"), ("b",)),
    (("a", "b"), ("a", 1)),
    ((1, "a", 4), ("b", 1, 4)),
    (("a",), (6, "b")),
    (("a", 3, "b"), (3, 1)),
    ((1,), ("a", "b")),
    (("a", 1), (1, "a")),
    (("a", 2, "b"), ("a", 1)),
    (("a", "b", 5), ("b", 1)),
    (("a", 3, 2, 5), ("b", 1, 5)),
]
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow")
COMPARE = ("greater", "greater_equal", "less", "equal")


def _cases() -> list[Case]:
    cases: list[Case] = []

    def case(name, build, *inputs):
        cases.append(Case(f"c{len(cases)}_{name}", build, list(inputs)))

    for i, (x, y) in enumerate(PAIRS):
        for op in BINARY:
            case(f"{op}{i}", _emit(op), In(x, draw="positive" if op == "pow" else "normal"),
                 In(y, draw="positive" if op == "div" else "normal"))
        for op in COMPARE:
            case(f"{op}{i}", _emit(op), In(x, draw="ints"), In(y, draw="ints"))
        case(f"where{i}", _emit("where"), In(x, "bool", "bool"), In(y), In((1,)))
        case(f"where_branches{i}", _emit("where"), In((1,), "bool", "bool"), In(x), In(y))
    # the reported case: (batch, 7) expanded to (batch, 1, 7) against (batch, 3, 7)
    case("expand_add", lambda ob, x, y: ob.add(ob.expand_dims(x, axis=1), y), In(("a", 7)), In(("a", 3, 7)))
    case("where3", _emit("where"), In(("a", 1, 7), "bool", "bool"), In(("b", 1)), In((3, 1)))
    case("add_n3", _emit("add_n"), In(("a", 7)), In(("b", 1)), In((3, 1, 1)))
    case("add_n_free", _emit("add_n"), In(("a", 1)), In((1, "b")), In(("a", "b")), In((4, 1, 1)))
    case("bias_add_free_bias", _emit("bias_add", axis=-1), In((2, 7)), In(("a",)))
    case("bias_add_axis1", _emit("bias_add", axis=1), In(("a", 4, "b")), In((4,)))
    case("bias_add_free_axis", _emit("bias_add", axis=1), In(("a", "b", 3)), In(("b",)))
    case("scale_shift", _emit("scale_shift", axis=-1), In((3, 5)), In(("a",)), In((5,)))
    case("batch_norm_free_axis", _emit("batch_norm", axis=1), In(("a", "b", 2)), In(("b",)), In(("b",)),
         In(("b",)), In(("b",), draw="positive"))
    case("broadcast_like", _emit("broadcast_like"), In(("a", 1, 7)), In(("b", 3, 7)))
    case("broadcast_like_fixed", _emit("broadcast_like"), In(("a", 7)), In((3, 7)))
    case("unary_grad", _emit("unary_grad", activation="tanh"), In((3, 7)), In(("a", 7)))
    case("matmul_batched", _emit("matmul"), In(("a", 4, 5)), In((3, 5, 6)))
    case("matmul_batched_free", _emit("matmul"), In(("a", 1, 4, 5)), In(("b", 5, 6)))
    # products: what the epilogue fusion takes (same type) and what it must leave alone
    w, bias = _w(1, 5, 7), _w(2, 7)

    def dense(ob, x, r):
        return ob.add(ob.relu(ob.bias_add(ob.matmul(x, ob.constant(w)), ob.constant(bias))), r)

    case("dense_residual_same", dense, In(("a", 5)), In(("a", 7)))
    case("dense_residual_row", dense, In(("a", 5)), In((1, 7)))
    case("dense_residual_fixed", dense, In(("a", 5)), In((3, 7)))
    case("dense_residual_free", dense, In(("a", 5)), In(("b", 7)))
    case("dense_residual_rank3", dense, In(("a", 1, 5)), In(("b", 3, 7)))
    kern, cbias = _w(3, 3, 3, 3, 4), _w(4, 4)

    def conv(ob, x, r):
        y = ob.conv(x, ob.constant(kern), pads=((1, 1), (1, 1)))
        return ob.add(ob.relu(ob.bias_add(y, ob.constant(cbias))), r)

    case("conv_residual_same", conv, In(("a", 5, 4, 3)), In(("a", 5, 4, 4)))
    case("conv_residual_pixel", conv, In(("a", 5, 4, 3)), In(("a", 1, 1, 4)))
    case("conv_residual_free", conv, In(("a", 5, 4, 3)), In(("b", 5, 4, 4)))
    case("conv_residual_fixed", conv, In(("a", 5, 4, 3)), In((2, 5, 1, 4)))
    # the fused ops themselves, with epilogue operands their shape rule accepts as broadcasting
    case("fused_matmul_row", lambda ob, x, r: ob.emit("fused_matmul", x, ob.constant(w), ob.constant(bias), r,
                                                     has_bias=True, has_residual=True, activation="relu"),
         In(("a", 5)), In((1, 7)))
    case("fused_matmul_rank3", lambda ob, x, r: ob.emit("fused_matmul", x, ob.constant(w), r, has_residual=True),
         In(("a", 2, 5)), In((1, 2, 7)))
    case("fused_conv_pixel", lambda ob, x, r: ob.emit("fused_conv", x, ob.constant(kern), r, has_residual=True,
                                                     pads=((1, 1), (1, 1)), post_activation="relu"),
         In(("a", 5, 4, 3)), In((1, 5, 4, 4)))
    case("scalar", lambda ob, x: ob.sub(ob.constant(np.float32(2.5)), x), In(("a", "b")))
    dw, pw = _w(4, 3, 3, 1, 3), _w(5, 3, 4)
    case("fused_separable_pixel",
         lambda ob, x, r: ob.emit("fused_separable_conv", x, ob.constant(dw), ob.constant(pw), r, groups=3,
                                  has_residual=True, pads=((1, 1), (1, 1))),
         In(("a", 5, 4, 3)), In((1, 5, 4, 4)))
    # arithmetic with neutral constants: removable only where it does not broadcast
    case("mul_ones_wider", lambda ob, x: ob.mul(x, ob.constant(np.ones((3, 7), np.float32))), In(("a", 7)))
    case("add_zeros_row", lambda ob, x: ob.add(x, ob.constant(np.zeros((1, 7), np.float32))), In(("a", 7)))
    # linear quantization: scales and zero points per tensor or per channel, inputs with free dims
    scales, points = np.array([0.05, 0.1, 0.02], np.float32), np.array([0, -3, 5], np.int8)

    def quantize(scale, point):
        return lambda ob, x: ob.emit("quantize_linear", x, ob.constant(scale), ob.constant(point), axis=-1)

    case("quantize_tensor", quantize(np.float32(0.05), np.uint8(128)), In(("a", "b")))
    case("quantize_channels", quantize(scales, points), In(("a", 3)))
    case("dequantize_channels",
         lambda ob, x: ob.emit("dequantize_linear", quantize(scales, points)(ob, x), ob.constant(scales),
                               ob.constant(points), axis=-1), In(("a", 1, 3)))
    case("requantize_tensor",
         lambda ob, x: ob.emit("requantize_linear", quantize(np.float32(0.05), np.uint8(128))(ob, x),
                               ob.constant(np.float32(0.05)), ob.constant(np.uint8(128)),
                               ob.constant(np.float32(0.08)), ob.constant(np.int8(-3))), In(("a", "b", 3)))
    return cases


CASES = _cases()


def _renamed(shape: tuple, prefix: str) -> tuple:
    return tuple(f"{prefix}_{d}" if isinstance(d, str) else d for d in shape)


def build_graph(cases: list[Case], name: str) -> tuple[Graph, dict[str, In]]:
    """One graph holding every case (inputs and free dims prefixed with the case id)."""
    g = Graph(name)
    specs: dict[str, In] = {}
    outputs = []
    for c in cases:
        names = []
        for i, spec in enumerate(c.inputs):
            v = g.add_input(f"{c.id}_in{i}", TensorType(spec.dtype, _renamed(spec.shape, c.id)))
            specs[v] = spec
            names.append(v)
        c.free = sorted({f"{c.id}_{d}" for s in c.inputs for d in s.shape if isinstance(d, str)})
        outputs.append(c.build(OpBuilder(g, layer=c.id), *names))
    g.set_outputs(outputs)
    return g, specs


def draw_feeds(graph: Graph, specs: dict[str, In], sizes: dict[str, int], rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name in graph.inputs:
        spec = specs[name]
        shape = graph.type_of(name).concrete_shape(sizes)
        if spec.draw == "bool":
            feeds[name] = rng.random(shape) < 0.5
        elif spec.draw == "ints":
            feeds[name] = rng.integers(-2, 3, size=shape).astype(spec.dtype)
        elif spec.draw == "positive":
            feeds[name] = rng.uniform(0.5, 2.0, size=shape).astype(spec.dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def valid_bindings(case: Case, rng) -> list[dict[str, int]]:
    """The bindings of ``case``'s free dims to SIZES at which its reference runs (NumPy
    broadcasting is defined); at each, the reference's output shape must be the shape rule's."""
    g, specs = build_graph([case], case.id)
    out = g.outputs[0]
    found = []
    for values in itertools.product(SIZES, repeat=len(case.free)):
        sizes = dict(zip(case.free, values))
        feeds = draw_feeds(g, specs, sizes, rng)
        try:
            got = reference_run(g, feeds)[out]
        except Exception:
            continue
        want = tuple(dims.evaluate(d, sizes) for d in g.type_of(out).shape)
        assert got.shape == want, f"{case.id} at {sizes}: the reference gives {got.shape}, the shape rule {want}"
        found.append(sizes)
    assert found, f"{case.id}: no binding of {case.free} to {SIZES} broadcasts"
    assert not case.free or any(1 in s.values() for s in found), f"{case.id}: never run with a free dim of 1"
    return found


def runs(cases: list[Case], rng) -> list[dict[str, int]]:
    """Bindings of every case's free dims so that each case runs at each of its valid bindings."""
    per_case = []
    for c in cases:
        found = valid_bindings(c, rng)
        rng.shuffle(found)
        per_case.append(sorted(found, key=lambda s: 1 not in s.values()))  # a free dim of 1 first
    n = max(len(b) for b in per_case)
    return [{k: v for b in per_case for k, v in b[r % len(b)].items()} for r in range(n)]


def assert_cases_match(graph: Graph, lib, cases: list[Case], feeds: dict, sizes: dict, label: str) -> None:
    """Native == reference for each case's output (named in a failure with its shapes and sizes)."""
    want = reference_run(graph, feeds)
    got = run_native(lib, feeds)
    for c, name, g in zip(cases, graph.outputs, got):
        w = np.asarray(want[name])
        where = (f"{label}: {c.id} on {[s.shape for s in c.inputs]} at "
                 f"{ {d[len(c.id) + 1:]: sizes[d] for d in c.free} }")
        assert g.shape == w.shape and g.dtype == w.dtype, f"{where}: {g.dtype}{g.shape} != reference {w.dtype}{w.shape}"
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=where)


def test_every_broadcasting_op_is_covered():
    from graphc.ops import REGISTRY

    built = set()
    for c in CASES:
        g, _ = build_graph([c], c.id)
        built |= {op.type for op in g.ops()}
    broadcasting = {n for n, d in REGISTRY.items() if d.fusion_kind == "broadcast"}
    assert broadcasting - built == set(), sorted(broadcasting - built)


@pytest.mark.parametrize("level", [0, 2])
def test_broadcasting_against_free_dims_of_1(level, rng):
    graph, specs = build_graph(CASES, f"broadcast_free_l{level}")
    bindings = runs(CASES, rng)
    compiled = optimize(graph, level) if level else graph
    lib = load(compiled)
    for sizes in bindings:
        assert_cases_match(graph, lib, CASES, draw_feeds(graph, specs, sizes, rng), sizes, f"level {level}")


@pytest.mark.parametrize("level", [0, 2])
def test_onnx_export_and_memory_plan_broadcast_free_dims_of_1(level, rng):
    """The same cases through onnxruntime and through the static memory plan (every tensor where
    the plan puts it): both size and read the broadcast operands at each binding."""
    from graphc.backends.onnx import export_graph
    from graphc.backends.onnx.verify import run_onnxruntime
    from graphc.memory import plan_memory
    from tests.memory.arena import run_in_arena

    graph, specs = build_graph(CASES, f"broadcast_free_onnx_l{level}")
    compiled = optimize(graph, level) if level else graph
    model = export_graph(compiled)
    for sizes in runs(CASES, rng):
        feeds = draw_feeds(graph, specs, sizes, rng)
        want = reference_run(graph, feeds)
        plan = plan_memory(compiled, **sizes)
        plan.check()
        got = {"onnx": run_onnxruntime(model, feeds), "memory plan": run_in_arena(compiled, plan, feeds)}
        for target, outs in got.items():
            for c, name in zip(CASES, graph.outputs):
                where = f"{target} level {level}: {c.id} at { {d[len(c.id) + 1:]: sizes[d] for d in c.free} }"
                w, g = np.asarray(want[name]), np.asarray(outs[name])
                assert g.shape == w.shape, f"{where}: {g.shape} != reference {w.shape}"
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=where)


def test_operands_that_do_not_broadcast_are_refused(rng):
    """(a, 7) + (3, 7) at a = 2: the reference raises, and so must the native code (not read past a)."""
    g = Graph("no_broadcast")
    x = g.add_input("x", TensorType("float32", ("a", 7)))
    y = g.add_input("y", TensorType("float32", (3, 7)))
    g.set_outputs([OpBuilder(g, layer="sum").add(x, y)])
    lib = load(g)
    feeds = {"x": rng.standard_normal((2, 7)).astype(np.float32), "y": rng.standard_normal((3, 7)).astype(np.float32)}
    with pytest.raises(Exception, match="broadcast"):
        reference_run(g, feeds)
    with pytest.raises(Exception, match=r"layer 'sum'.*\(a, 7\) and \(3, 7\) do not broadcast to \(3, 7\).*is 2"):
        run_native(lib, feeds)


# ---------------------------------------------------------------------------- property test
@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast for some binding of their free dims (each one free of them a
    case's own ``a`` or ``b``, fixed dims agreeing or 1)."""
    rank = draw(st.integers(1, 4))
    x, y = [], []
    for _ in range(rank):
        fixed = draw(st.sampled_from([2, 3, 5]))
        kinds = draw(st.tuples(*[st.sampled_from(["one", "fixed", "a", "b"])] * 2))
        x_d, y_d = ({"one": 1, "fixed": fixed, "a": "a", "b": "b"}[k] for k in kinds)
        x.append(x_d)
        y.append(y_d)
    x = x[draw(st.integers(0, rank - 1)):]  # NumPy aligns the trailing axes
    y = y[draw(st.integers(0, rank - 1)):]
    op = draw(st.sampled_from([*BINARY, *COMPARE, "where"]))
    return tuple(x), tuple(y), op


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(broadcast_pair(), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_random_broadcasts_against_free_dims(pairs, seed):
    rng = np.random.default_rng(seed)
    cases = []
    for i, (x, y, op) in enumerate(pairs):
        if op == "where":
            cases.append(Case(f"r{i}_where", _emit("where"), [In(x, "bool", "bool"), In(y), In((1,))]))
        else:
            draw_y = "positive" if op == "div" else "ints" if op in COMPARE else "normal"
            draw_x = "positive" if op == "pow" else "ints" if op in COMPARE else "normal"
            cases.append(Case(f"r{i}_{op}", _emit(op), [In(x, draw=draw_x), In(y, draw=draw_y)]))
    graph, specs = build_graph(cases, "broadcast_random")
    lib = load(graph)
    for sizes in runs(cases, rng)[:4]:
        assert_cases_match(graph, lib, cases, draw_feeds(graph, specs, sizes, rng), sizes, "random")
