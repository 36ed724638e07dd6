"""1x1 convolutions rewritten as matmuls over pixels (strided ones through slice views)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Sequential, layers
from graphc.api import lower
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


@pytest.mark.parametrize("channels,filters", [(1, 1), (3, 7), (17, 4)])
def test_unstrided_1x1_conv_is_a_matmul(channels, filters, rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 7, channels)))
    w = const(b, rng, (1, 1, channels, filters))
    g.set_outputs([b.relu(b.conv(x, w))])
    out, report = apply(g, "conv1x1_to_matmul", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 5, 7, channels)))
    e.set_outputs([eb.relu(eb.matmul(ex, const(eb, rng, (channels, filters))))])
    assert_same_structure(out, e)
    kernel = next(op.inputs[1] for op in out.ops() if op.type == "matmul")
    np.testing.assert_array_equal(out.constants[kernel], g.constants[w].reshape(channels, filters))
    assert report.events()["conv1x1_to_matmul: conv1x1 -> matmul"] == 1
    assert_equivalent(g, out, rng)


@pytest.mark.parametrize("strides,size", [((2, 2), (7, 7)), ((2, 3), (8, 17)), ((1, 2), (1, 3))])
def test_strided_1x1_conv_reads_a_subsampled_view(strides, size, rng):
    model = Sequential([Input(size + (3,)), layers.Conv2D(5, 1, strides=strides, padding="same")])
    g = lower(model)
    out, report = apply(g, "conv1x1_to_matmul", "dce")
    e, eb, (ex,) = new_graph((g.inputs[0], ("batch",) + size + (3,)))
    v = ex
    for axis, s in enumerate(strides):
        if s > 1:
            v = eb.slice(v, axis=axis + 1, start=0, stop=None, step=s)
    e.set_outputs([eb.bias_add(eb.matmul(v, const(eb, rng, (3, 5))), const(eb, rng, (5,)))])
    assert_same_structure(out, e)
    assert report.events()["conv1x1_to_matmul: strided conv1x1 -> matmul"] == 1
    assert_equivalent(g, out, rng, batches=(1, 2))


def test_conv1d_and_free_spatial_dims(rng):
    g = Graph("t")
    x = g.add_input("x", TensorType("float32", ("batch", "steps", 3)))
    b = OpBuilder(g, "c")
    g.set_outputs([b.conv(x, const(b, rng, (1, 3, 4)), strides=(2,))])
    out, _ = apply(g, "conv1x1_to_matmul", "dce")
    assert out.op_counts() == {"matmul": 1, "slice": 1}
    from graphc.backends.reference import run

    for steps in (1, 6, 7):
        xs = rng.standard_normal((2, steps, 3)).astype(np.float32)
        np.testing.assert_allclose(run(out, {"x": xs})[out.outputs[0]], run(g, {"x": xs})[g.outputs[0]],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", [
    lambda b, x, rng: b.conv(x, const(b, rng, (3, 3, 4, 2))),  # not 1x1
    lambda b, x, rng: b.conv(x, const(b, rng, (1, 1, 2, 2)), groups=2),  # grouped
    lambda b, x, rng: b.conv(x, const(b, rng, (1, 1, 4, 2)), pads=((1, 0), (0, 0))),  # padded
], ids=["3x3", "grouped", "padded"])
def test_other_convs_stay(build, rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 5, 4)))
    g.set_outputs([build(b, x, rng)])
    out, report = apply(g, "conv1x1_to_matmul")
    assert out.op_counts() == {"conv": 1} and not report.passes["conv1x1_to_matmul"].changed


def test_runtime_kernel_is_reshaped_by_an_op(rng):
    g, b, (x, w) = new_graph(("x", ("batch", 4, 4, 3)), ("w", (1, 1, 3, 2)))
    g.set_outputs([b.conv(x, w)])
    out, _ = apply(g, "conv1x1_to_matmul", "dce")
    assert out.op_counts() == {"matmul": 1, "reshape": 1}
    assert_equivalent(g, out, rng)
