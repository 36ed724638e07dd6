"""Declarative patterns: matching, bindings, single-use inner values, commutative ops, rewriting."""

from __future__ import annotations

from graphc.passes.pattern import Const, Pat, Var, match, replace_value, rewrite
from tests.passes.util import assert_equivalent, const, new_graph

DENSE = Pat("relu", Pat("bias_add", Pat("matmul", Var("x"), Const("w"), name="mm"), Const("b")))


def test_match_binds_values_and_named_ops(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    w, bias = const(b, rng, (3, 2)), const(b, rng, (2,), "b")
    y = b.relu(b.bias_add(b.matmul(x, w), bias))
    m = match(g, DENSE, y)
    assert m is not None and m["x"] == x and m["w"] == w and m["b"] == bias
    assert m.op("mm").type == "matmul" and "mm" in m and m.get("nothing") is None


def test_constants_inner_uses_and_repeated_names_are_checked(rng):
    g, b, (x, w) = new_graph(("x", ("batch", 3)), ("w", (3, 2)))
    assert match(g, DENSE, b.relu(b.bias_add(b.matmul(x, w), const(b, rng, (2,))))) is None  # w not const
    inner = b.matmul(x, const(b, rng, (3, 2)))
    y = b.relu(b.bias_add(inner, const(b, rng, (2,))))
    g.set_outputs([y, inner])  # the matmul result has a second reader
    assert match(g, DENSE, y) is None
    square = Pat("mul", Var("a"), Var("a"))
    assert match(g, square, b.mul(x, x)) is not None and match(g, square, b.mul(x, b.neg(x))) is None


def test_commutative_patterns_try_both_orders():
    g, b, (x, y) = new_graph(("x", ("batch", 3)), ("y", ("batch", 3)))
    s = b.add(x, b.relu(y))
    assert match(g, Pat("add", Pat("relu", Var("r")), Var("o")), s) is None
    m = match(g, Pat("add", Pat("relu", Var("r")), Var("o"), commutative=True), s)
    assert m["r"] == y and m["o"] == x


def test_rewrite_replaces_and_cleans_up(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    g.set_outputs([b.neg(b.neg(x))])
    before = g.copy()
    changed = rewrite(g, [(Pat("neg", Pat("neg", Var("v"))), lambda graph, m: b.identity(m["v"]))])
    assert changed and g.op_counts() == {"identity": 1}
    assert g.outputs == before.outputs
    assert_equivalent(before, g, rng)
    assert not rewrite(g, [(Pat("neg", Pat("neg", Var("v"))), lambda graph, m: None)])


def test_replace_value_keeps_output_names():
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    y = b.relu(x)
    g.rename_value(y, "out")
    g.set_outputs(["out"])
    replace_value(g, "out", b.tanh(x))
    assert g.outputs == ["out"] and g.producer("out").type == "tanh" and len(g) == 1
