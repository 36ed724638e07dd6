"""The Graph API: building, queries, and the mutations passes rely on."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Graph, IRError, TensorType
from graphc.ir.verify import verify
from tests.ir.graphs import chain, f32, tiny


def diamond() -> Graph:
    """x -> a = relu(x), b = neg(x) -> c = add(a, b); outputs c and a."""
    g = Graph("diamond")
    x = g.add_input("x", f32(4))
    a = g.add_op("relu", [x], [f32(4)], name="a", layer="left").outputs[0]
    b = g.add_op("neg", [x], [f32(4)], name="b", layer="right").outputs[0]
    c = g.add_op("add", [a, b], [f32(4)], name="c", layer="join").outputs[0]
    g.set_outputs([c, a])
    return g


# ---------------------------------------------------------------------------------------------
# Building and queries


def test_values_ops_and_edges():
    g = diamond()
    assert [op.id for op in g.ops()] == ["a", "b", "c"]
    assert g.producer("a").type == "relu" and g.producer("x") is None
    assert [(op.id, i) for op, i in g.consumers("x")] == [("a", 0), ("b", 0)]
    assert [(op.id, i) for op, i in g.consumers("a")] == [("c", 0)]
    assert g.num_uses("a") == 2 and g.num_uses("c") == 1 and g.num_uses("x") == 2
    assert g.type_of("c") == f32(4)
    assert g.op_counts() == {"add": 1, "neg": 1, "relu": 1}
    assert len(g) == 3 and g.is_acyclic() and g.find_cycle() is None
    assert sorted(g.nx_graph.edges()) == [("a", "c"), ("b", "c")]
    assert g.op("c").layer == "join" and g.values["c"].layer == "join"
    with pytest.raises(IRError, match="no op 'zz' in graph 'diamond'"):
        g.op("zz")
    assert g.has_op("a") and not g.has_op("zz")


def test_the_same_value_read_twice():
    g = Graph("square")
    x = g.add_input("x", f32(3))
    y = g.add_op("relu", [x], [f32(3)]).outputs[0]
    z = g.add_op("mul", [y, y], [f32(3)]).outputs[0]
    g.set_outputs([z])
    assert [(op.id, i) for op, i in g.consumers(y)] == [("mul", 0), ("mul", 1)]
    assert g.nx_graph.number_of_edges("relu", "mul") == 2


def test_names_and_errors():
    g = diamond()
    assert g.unique_name("a") == "a_1" and g.unique_name("fresh") == "fresh"
    op = g.add_op("relu", ["c"], [f32(4)])
    assert op.id == "relu" and op.outputs == ["relu"]
    multi = g.add_op("split", ["c"], [f32(2), f32(2)])
    assert multi.outputs == ["split:0", "split:1"]
    with pytest.raises(IRError, match=r"op 'relu' \(dense\) reads undefined value 'nope'"):
        g.add_op("relu", ["nope"], [f32(4)], layer="dense")
    with pytest.raises(IRError, match="value 'x' is already defined"):
        g.add_input("x", f32(1))
    with pytest.raises(IRError, match="graph output 'missing' is not defined"):
        g.set_outputs(["missing"])
    assert g.param_count() == 0


def test_constants():
    g = tiny()
    assert g.param_count() == 6 + 2 + 1
    g.set_constant("dense/bias", np.array([1.0, 2.0], np.float32))
    assert g.constants["dense/bias"].tolist() == [1.0, 2.0]
    with pytest.raises(IRError, match=r"constant 'dense/bias' is f32\[2\], got f32\[3\]"):
        g.set_constant("dense/bias", np.zeros(3, np.float32))
    with pytest.raises(IRError, match=r"constant 'dense/bias' is f32\[2\], got f64\[2\]"):
        g.set_constant("dense/bias", np.zeros(2))
    with pytest.raises(IRError, match="'matmul' is not a constant"):
        g.set_constant("matmul", np.zeros(2))
    with pytest.raises(IRError, match="cannot remove constant 'scale': it is still used"):
        g.remove_constant("scale")
    g.add_constant("unused", np.ones(2, np.float32))
    g.remove_constant("unused")
    assert "unused" not in g.values and "unused" not in g.constants


def test_topological_order_is_deterministic_with_insertion_order_as_tiebreak():
    g = Graph("order")
    x = g.add_input("x", f32(1))
    for name in ["p", "q", "r", "s"]:
        g.add_op("relu", [x], [f32(1)], name=name)
    assert [op.id for op in g.ops()] == ["p", "q", "r", "s"]
    g.set_op_inputs("p", ["s"])
    assert [op.id for op in g.ops()] == ["q", "r", "s", "p"]


# ---------------------------------------------------------------------------------------------
# Mutations


def test_replace_all_uses():
    g = diamond()
    y = g.add_op("tanh", ["x"], [f32(4)], name="t").outputs[0]
    g.replace_all_uses("a", y)
    assert g.op("c").inputs == ["t", "b"] and g.outputs == ["c", "t"]
    assert g.num_uses("a") == 0 and ("t", "c") in g.nx_graph.edges() and ("a", "c") not in g.nx_graph.edges()
    verify(g)
    g.replace_all_uses("t", "t")  # no-op
    with pytest.raises(IRError, match="replacement value 'ghost' is not defined"):
        g.replace_all_uses("b", "ghost")


def test_replace_then_remove_a_dead_op():
    g = diamond()
    g.replace_all_uses("b", "x")
    g.remove_op("b")
    assert [op.id for op in g.ops()] == ["a", "c"] and "b" not in g.values
    assert g.op("c").inputs == ["a", "x"]
    verify(g)


def test_remove_op_refuses_live_outputs():
    g = diamond()
    with pytest.raises(IRError, match="cannot remove op 'b': its output 'b' is still used"):
        g.remove_op("b")
    with pytest.raises(IRError, match="cannot remove op 'c': its output 'c' is still used"):
        g.remove_op("c")  # a graph output counts as a use


def test_set_op_inputs():
    g = diamond()
    g.set_op_inputs("c", ["a", "a"])
    assert g.num_uses("b") == 0 and g.nx_graph.number_of_edges("a", "c") == 2
    with pytest.raises(IRError, match="op 'c' would read undefined value 'ghost'"):
        g.set_op_inputs("c", ["ghost"])


@pytest.mark.parametrize("old, new", [("a", "left_out"), ("x", "features"), ("c", "result")])
def test_rename_value(old, new):
    g = diamond()
    before = str(g)
    g.rename_value(old, new)
    assert new in g.values and old not in g.values and g.values[new].name == new
    assert str(g) == before.replace(f"%{old}:", f"%{new}:").replace(f"%{old},", f"%{new},") \
        .replace(f"%{old})", f"%{new})").replace(f"%{old}\n", f"%{new}\n")
    verify(g)
    assert [op.id for op in g.ops()] == ["a", "b", "c"]


def test_rename_constant_and_errors():
    g = tiny()
    g.rename_value("scale", "two")
    assert "two" in g.constants and "scale" not in g.constants and g.op("mul").inputs == ["split:0", "two"]
    verify(g)
    with pytest.raises(IRError, match="cannot rename 'two' to 'x': the name is taken"):
        g.rename_value("two", "x")
    g.rename_value("two", "two")


def test_copy_is_independent_but_shares_constant_data():
    g = tiny()
    c = g.copy()
    assert str(c) == str(g) and c.meta == g.meta
    c.rename_value("scale", "s2")
    c.replace_all_uses("reshape", "bias_add")
    c.remove_op("reshape")
    assert "scale" in g.values and g.has_op("reshape") and str(g) != str(c)
    assert c.constants["dense/kernel"] is g.constants["dense/kernel"]
    verify(g)
    verify(c)


def test_cycle_makes_ops_raise():
    g = chain(2)
    first, second = g.ops()
    g.set_op_inputs(first.id, [second.outputs[0]])
    assert not g.is_acyclic() and g.find_cycle() in (["relu", "relu_1"], ["relu_1", "relu"])
    with pytest.raises(IRError, match="graph 'chain' has a cycle through ops"):
        g.ops()


def test_tensor_type_helpers():
    t = TensorType("float32", (2, 3))
    assert t.with_shape((6,)) == TensorType("float32", (6,)) and t.with_dtype("int32").dtype == "int32"
    assert t.is_static and t.nbytes() == 24 and t.itemsize == 4
    assert TensorType.of(np.zeros((2,), np.int64)) == TensorType("int64", (2,))
    assert TensorType("float32", (np.int64(3),)).shape == (3,) and type(TensorType("float32", (np.int64(3),))
                                                                         .shape[0]) is int
