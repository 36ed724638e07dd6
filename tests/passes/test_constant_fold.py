"""Constant folding."""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import constant_fold
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


def test_folds_the_depthwise_kernel_reshape(rng):
    g, b, (x,) = new_graph(("x", ("batch", 7, 7, 3)))
    k = const(b, rng, (3, 3, 3, 2), "depthwise")
    w = b.reshape(k, shape=(3, 3, 1, 6))
    g.set_outputs([b.conv(x, w, groups=3, pads=((1, 1), (1, 1)))])
    out, report = apply(g, "constant_fold", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 7, 7, 3)))
    e.set_outputs([eb.conv(ex, const(eb, rng, (3, 3, 1, 6)), groups=3, pads=((1, 1), (1, 1)))])
    assert_same_structure(out, e)
    folded = [c for c in out.constants if c.endswith("_folded")]
    np.testing.assert_array_equal(out.constants[folded[0]], g.constants[k].reshape(3, 3, 1, 6))
    assert not out.values[folded[0]].trainable
    assert report.events()["constant_fold: reshape folded"] == 1
    assert_equivalent(g, out, rng)


def test_folds_chains_of_constant_ops(rng):
    g, b, (x,) = new_graph(("x", ("batch", 5)))
    c = b.transpose(b.mul(const(b, rng, (5, 4)), const(b, rng, (5, 4), "s")), perm=(1, 0))
    g.set_outputs([b.matmul(x, b.transpose(c, perm=(1, 0)))])
    out, _ = apply(g, "constant_fold", "dce")
    assert out.op_counts() == {"matmul": 1}
    assert_equivalent(g, out, rng)


def test_leaves_symbolic_results_and_outputs_alone(rng):
    g = Graph("s")
    x = g.add_input("x", TensorType("float32", ("n", 2)))
    b = OpBuilder(g)
    c = const(b, rng, (2,))
    g.set_outputs([b.neg(c), b.add(x, c)])
    assert not constant_fold.constant_fold(g.copy())  # the output stays an op; x is not constant


def test_does_not_blow_up_a_constant(rng):
    g, b, (x,) = new_graph(("x", (512, 1024)))
    big = b.add(b.constant(np.zeros((512, 1), np.float32)), b.constant(np.zeros((1, 1024), np.float32)))
    g.set_outputs([b.add(x, big)])
    assert not constant_fold.constant_fold(g.copy())  # 2 MiB from 6 KiB: left to run time
