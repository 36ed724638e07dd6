"""The ``resize`` op: PyTorch's interpolate (align_corners=False) in the reference, ONNX and native
code, with free sizes, and its gradient against finite differences (known sizes and free ones)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.autodiff import gradients
from graphc.backends.onnx import verify_graph
from graphc.backends.reference import run
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder, ShapeError
from tests.autodiff.gradcheck import Arg, Case, check_case
from tests.backends.llvm.helpers import assert_matches_reference, load

torch = pytest.importorskip("torch")


def one_op(shape, dtype="float32", **attrs):
    g = Graph("resize")
    x = g.add_input("x", TensorType(dtype, shape))
    y = OpBuilder(g, layer="probe").resize(x, **attrs)
    g.set_outputs([y])
    return g, x, y


@pytest.mark.parametrize("shape,attrs,want", [
    ((2, 5, 7, 3), dict(axes=(1, 2), size=(11, 3)), (2, 11, 3, 3)),
    (("batch", "h", "w", 3), dict(axes=(1, 2), size=("h*2", "w*3")), ("batch", "h*2", "w*3", 3)),
    (("batch", 3, 7), dict(axes=(-1,), size=(2,), mode="nearest"), ("batch", 3, 2)),
])
def test_shape_rule(shape, attrs, want):
    g, _, y = one_op(shape, **attrs)
    assert g.type_of(y).shape == want


@pytest.mark.parametrize("attrs,dtype,match", [
    (dict(axes=(1,), size=(3, 4)), "float32", "same length"),
    (dict(axes=(1, 1), size=(3, 4)), "float32", "repeat an axis"),
    (dict(axes=(3,), size=(3,)), "float32", "out of range"),
    (dict(axes=(1,), size=(0,)), "float32", "positive integers"),
    (dict(axes=(1,), size=(3,), mode="cubic"), "float32", "mode must be one of"),
    (dict(axes=(1,), size=(3,)), "int32", "linear resize input must be a float tensor"),
])
def test_bad_attributes_are_refused(attrs, dtype, match):
    with pytest.raises(ShapeError, match=match):
        one_op((2, 5, 3), dtype, **attrs)


@pytest.mark.parametrize("mode,torch_mode", [("linear", "bilinear"), ("nearest", "nearest-exact")])
@pytest.mark.parametrize("size,out", [((5, 7), (11, 3)), ((7, 5), (14, 15)), ((4, 4), (1, 3)), ((1, 3), (5, 2)),
                                      ((17, 9), (7, 17))])
def test_reference_equals_pytorch(mode, torch_mode, size, out, rng):
    x = rng.standard_normal((2, *size, 3)).astype("float32")
    g, xi, y = one_op(x.shape, axes=(1, 2), size=out, mode=mode)
    got = run(g, {xi: x})[y]
    kw = {"align_corners": False} if mode == "linear" else {}
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=out, mode=torch_mode,
                                           **kw).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_nearest_at_an_integer_factor_repeats_and_keeps_integers():
    g, xi, y = one_op(("batch", "n", 2), "int32", axes=(1,), size=("n*3",), mode="nearest")
    x = np.arange(8, dtype=np.int32).reshape(1, 4, 2)
    got = run(g, {xi: x})[y]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.repeat(x, 3, axis=1))


CASES = [
    Case("resize", [Arg((2, 5, 4, 3))], {"axes": (1, 2), "size": (11, 3), "mode": "linear"}, id="linear_2d"),
    Case("resize", [Arg((3, 7, 2))], {"axes": (1,), "size": (2,), "mode": "linear"}, id="linear_down"),
    Case("resize", [Arg((2, 5, 3))], {"axes": (1,), "size": (8,), "mode": "nearest"}, id="nearest_up"),
    Case("resize", [Arg((2, 3, 4, 5))], {"axes": (3, 1), "size": (2, 7), "mode": "nearest"}, id="nearest_2d"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradient_of_known_sizes_matches_central_differences(case, rng):
    check_case(case, rng)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("n", [1, 4])
def test_gradient_of_free_sizes_matches_central_differences(mode, factor, n, rng):
    """An integer factor along free axes: the adjoint is written per phase (no tables)."""
    g = Graph("grad_free")
    x = g.add_input("x", TensorType("float64", ("batch", "h", "w", 2)))
    b = OpBuilder(g)
    y = b.resize(x, axes=(1, 2), size=(f"h*{factor}", "w*2"), mode=mode)
    w = g.add_input("w", TensorType("float64", ("batch", f"h*{factor}", "w*2", 2)))
    loss = b.reduce_sum(b.mul(y, w), axes=(0, 1, 2, 3))
    dx = gradients(g, loss, [x])[x]
    assert g.type_of(dx).shape == ("batch", "h", "w", 2)
    g.set_outputs([loss, dx])
    xs = rng.standard_normal((2, n, 3, 2))
    feeds = {"x": xs, "w": rng.standard_normal((2, n * factor, 6, 2))}
    grad = run(g, feeds)[dx]
    h = 1e-6
    for _ in range(3):
        v = rng.standard_normal(xs.shape)
        numeric = (run(g, {**feeds, "x": xs + h * v})[loss] - run(g, {**feeds, "x": xs - h * v})[loss]) / (2 * h)
        np.testing.assert_allclose(np.sum(grad * v), numeric, rtol=1e-5, atol=1e-7)


def test_a_gradient_without_tables_or_factor_is_refused():
    g = Graph("grad_odd")
    x = g.add_input("x", TensorType("float32", ("batch", "h", 3)))
    b = OpBuilder(g)
    loss = b.reduce_sum(b.resize(x, axes=(1,), size=(5,)), axes=(0, 1, 2))
    with pytest.raises(ShapeError, match="known sizes or an integer factor along axis 1"):
        gradients(g, loss, [x])


SPECS = [
    (("batch", "h", "w", 3), (1, 2), ("h*2", "w*3"), "linear", "float32"),
    (("batch", 7, 5, 2), (1, 2), (4, 9), "linear", "float32"),
    (("batch", 7, 5, 2), (1, 2), (11, 3), "nearest", "float32"),
    (("batch", 3, 7, 5), (2, 3), (9, 4), "linear", "float32"),
    (("batch", "h", 4), (1,), ("h*3",), "nearest", "float32"),
    (("batch", 6, 5), (1, 2), (4, 13), "linear", "float32"),
    (("batch", 2, "w", 3, 2), (1, 2, 3), (5, "w*2", 1), "linear", "float32"),
    (("batch", 5, 3), (1,), (7,), "nearest", "int32"),
    # channels past a whole vector (one masked vector for the rest), and exactly one vector
    (("batch", 3, 4, 19), (1, 2), (7, 9), "linear", "float32"),
    (("batch", 4, 5, 16), (1, 2), (8, 10), "nearest", "float32"),
    (("batch", 5, 37), (1,), (11,), "linear", "float32"),
]


def _graph():
    g = Graph("resizes")
    outs = []
    for i, (shape, axes, sizes, mode, dtype) in enumerate(SPECS):
        x = g.add_input(f"x{i}", TensorType(dtype, shape))
        outs.append(OpBuilder(g, layer=f"resize{i}").resize(x, axes=axes, size=sizes, mode=mode))
    g.set_outputs(outs)
    return g


def _feeds(g, sizes, rng):
    feeds = {}
    for name in g.inputs:
        t = g.type_of(name)
        shape = t.concrete_shape(sizes)
        feeds[name] = rng.integers(-50, 50, size=shape).astype(t.dtype) if t.dtype == "int32" \
            else rng.standard_normal(shape).astype(t.dtype)
    return feeds


SIZES = ({"batch": 1, "h": 1, "w": 4}, {"batch": 3, "h": 5, "w": 1}, {"batch": 2, "h": 6, "w": 7})


def test_onnx_export_matches_the_reference(rng):
    g = _graph()
    for sizes in SIZES:
        report = verify_graph(g, _feeds(g, sizes, rng))
        assert report.ok, f"{sizes}\n{report}"


def test_native_code_matches_the_reference(rng):
    g = _graph()
    lib = load(g)
    for threads, sizes in zip((1, 2, 2), SIZES):
        assert_matches_reference(g, lib, _feeds(g, sizes, rng), threads=threads, rtol=1e-6, atol=1e-6,
                                 label=str(sizes))
