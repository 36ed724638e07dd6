"""The ``pad`` op: shape rule (static and free dims), errors, values, gradient, ONNX and native code."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.onnx import verify_graph
from graphc.backends.reference import run
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder, ShapeError
from tests.autodiff.gradcheck import Arg, Case, check_case
from tests.backends.llvm.helpers import assert_matches_reference, load


def graph_of(*types):
    g = Graph("pad")
    names = [g.add_input(f"x{i}", TensorType(*t)) for i, t in enumerate(types)]
    return g, OpBuilder(g, layer="probe"), names


@pytest.mark.parametrize("shape,pads,want", [
    ((2, 3, 5), ((0, 0), (1, 2), (0, 0)), (2, 6, 5)),
    (("batch", 7, 7, 3), ((0, 0), (3, 3), (0, 1), (0, 0)), ("batch", 13, 8, 3)),
    (("batch", "n", 4), ((0, 0), (2, 1), (0, 0)), ("batch", "n + 3", 4)),
    ((3,), ((0, 0),), (3,)),
])
def test_shape_rule(shape, pads, want):
    g, b, (x,) = graph_of(("float32", shape))
    assert g.type_of(b.pad(x, pads=pads)).shape == want


@pytest.mark.parametrize("pads,match", [
    (((1, 1),), "2 \\(before, after\\) pair"),
    (((1, 1), (1,)), "2 \\(before, after\\) pair"),
    (((1, 1), (-1, 0)), "non-negative integers"),
    (((1, 1), (0.5, 0)), "non-negative integers"),
    (3, "2 \\(before, after\\) pair"),
])
def test_bad_pads_are_refused(pads, match):
    g, b, (x,) = graph_of(("float32", (3, 4)))
    with pytest.raises(ShapeError, match=match):
        b.pad(x, pads=pads)


def test_values_with_fill_and_free_dims(rng):
    g, b, (x,) = graph_of(("float32", ("batch", "n", 2)))
    y = b.pad(x, pads=((0, 1), (2, 0), (1, 1)), value=-1.5)
    g.set_outputs([y])
    data = rng.standard_normal((2, 5, 2)).astype(np.float32)
    got = run(g, {"x0": data})[y]
    want = np.full((3, 7, 4), -1.5, np.float32)
    want[:2, 2:, 1:3] = data
    np.testing.assert_array_equal(got, want)


def test_integer_tensors_pad_with_integers():
    g, b, (x,) = graph_of(("int32", (2, 3)))
    y = b.pad(x, pads=((1, 0), (0, 2)), value=7)
    g.set_outputs([y])
    got = run(g, {"x0": np.arange(6, dtype=np.int32).reshape(2, 3)})[y]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [[7, 7, 7, 7, 7], [0, 1, 2, 7, 7], [3, 4, 5, 7, 7]])


@pytest.mark.parametrize("case", [
    Case("pad", [Arg((2, 3, 5))], {"pads": ((0, 0), (1, 2), (3, 0))}, id="pad_two_axes"),
    Case("pad", [Arg((1, 7, 5, 3))], {"pads": ((0, 1), (3, 3), (0, 1), (0, 0)), "value": 2.0}, id="pad_filled"),
    Case("pad", [Arg((3, 4))], {"pads": ((0, 0), (0, 0))}, id="pad_nothing"),
], ids=lambda c: c.id)
def test_gradient_matches_central_differences(case, rng):
    check_case(case, rng)


def test_gradient_keeps_a_free_axis_symbolic():
    from graphc.autodiff import gradients

    g, b, (x,) = graph_of(("float32", ("batch", "n", 3)))
    y = b.pad(x, pads=((0, 0), (1, 2), (0, 1)))
    loss = b.reduce_sum(b.square(y), axes=(0, 1, 2))
    dx = gradients(g, loss, [x])[x]
    assert g.type_of(dx).shape == ("batch", "n", 3)
    g.set_outputs([dx])
    data = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    np.testing.assert_allclose(run(g, {"x0": data})[dx], 2 * data)


PAD_CASES = [
    ((("batch", 7, 6, 3)), ((0, 0), (1, 1), (2, 1), (0, 0)), 0.0),
    ((("batch", "n", 5)), ((0, 0), (3, 0), (0, 0)), 0.0),
    ((("batch", 5, 17)), ((1, 2), (0, 0), (0, 3)), 0.5),
    ((("batch", 3, 4, 5, 2)), ((0, 0), (1, 0), (0, 2), (1, 1), (0, 0)), 0.0),
    ((("batch", 9)), ((0, 0), (0, 0)), 0.0),
]


def _pad_graph():
    g = Graph("pads")
    outs = []
    for i, (shape, pads, value) in enumerate(PAD_CASES):
        x = g.add_input(f"x{i}", TensorType("float32", shape))
        outs.append(OpBuilder(g, layer=f"pad{i}").pad(x, pads=pads, value=value))
    g.set_outputs(outs)
    return g


def _feeds(g, sizes, rng):
    return {name: rng.standard_normal(g.type_of(name).concrete_shape(sizes)).astype(np.float32)
            for name in g.inputs}


def test_onnx_export_matches_the_reference(rng):
    g = _pad_graph()
    for sizes in ({"batch": 1, "n": 7}, {"batch": 3, "n": 1}):
        report = verify_graph(g, _feeds(g, sizes, rng))
        assert report.ok, f"{sizes}\n{report}"


def test_native_code_matches_the_reference(rng):
    g = _pad_graph()
    lib = load(g)
    for threads, sizes in ((1, {"batch": 1, "n": 7}), (2, {"batch": 3, "n": 17})):
        assert_matches_reference(g, lib, _feeds(g, sizes, rng), threads=threads, rtol=0, atol=0,
                                 label=str(sizes))
