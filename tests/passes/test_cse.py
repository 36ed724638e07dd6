"""Common-subexpression elimination."""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


def test_merges_identical_ops(rng):
    g, b, (x,) = new_graph(("x", ("batch", 17)))
    w = const(b, rng, (17, 3))
    a1 = b.relu(b.matmul(x, w))
    a2 = b.relu(b.matmul(x, w))
    other = b.relu(b.matmul(x, const(b, rng, (17, 3), "w2")))  # different weights: kept
    g.set_outputs([b.add(b.add(a1, a2), other)])
    out, report = apply(g, "cse", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 17)))
    r = eb.relu(eb.matmul(ex, const(eb, rng, (17, 3))))
    e.set_outputs([eb.add(eb.add(r, r), eb.relu(eb.matmul(ex, const(eb, rng, (17, 3)))))])
    assert_same_structure(out, e)
    assert report.events()["cse: ops merged"] == 2
    assert_equivalent(g, out, rng)


def test_attributes_distinguish_ops(rng):
    g, b, (x,) = new_graph(("x", ("batch", 6)))
    g.set_outputs([b.add(b.reshape(x, shape=("batch", 2, 3)), b.reshape(x, shape=("batch", 2, 3))),
                   b.reshape(x, shape=("batch", 3, 2))])
    out, _ = apply(g, "cse", "dce")
    assert out.op_counts()["reshape"] == 2


def test_merges_equal_small_constants_but_not_weights(rng):
    g = Graph("c")
    x = g.add_input("x", TensorType("float32", (4,)))
    b = OpBuilder(g)
    one_a = b.constant(np.ones(4, np.float32), "one")
    one_b = b.constant(np.ones(4, np.float32), "one")
    w1 = g.add_constant("w1", np.zeros(4, np.float32), trainable=True)
    w2 = g.add_constant("w2", np.zeros(4, np.float32), trainable=True)
    g.set_outputs([b.add(b.mul(x, one_a), b.mul(x, one_b)), b.add(x, w1), b.add(x, w2)])
    out, report = apply(g, "cse", "dce")
    assert report.events()["cse: constants merged"] == 1
    assert out.op_counts() == {"add": 3, "mul": 1}
    assert {"w1", "w2"} <= set(out.constants)
    assert_equivalent(g, out, rng)


def test_graph_outputs_keep_their_names(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    g.set_outputs([b.relu(x), b.relu(x)])
    out, _ = apply(g, "cse", "dce")
    assert out.outputs == g.outputs and len(out) == 2  # two outputs, two values
