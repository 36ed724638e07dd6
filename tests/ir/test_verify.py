"""The verifier: each broken invariant is caught, and the message names the op and its layer."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.ir import Graph, TensorType, VerificationError
from graphc.ir.graph import Value
from graphc.ir.verify import verify
from graphc.ops import infer_op
from tests.ir.graphs import chain, f32, tiny


def dense_graph() -> Graph:
    """A well-typed graph from the front end (registry ops, so the shape rules apply)."""
    x = Input((6,), name="x")
    h = layers.Dense(4, activation="relu", name="hidden")(x)
    return graphc.lower(Model(x, layers.Dense(2, name="head")(h)))


def test_valid_graphs_pass():
    verify(tiny())
    verify(chain(4))
    graph = dense_graph()
    verify(graph, infer_op)
    graphc.verify(graph)


def test_cycle():
    g = chain(3)
    first, _, last = g.ops()
    g.set_op_inputs(first.id, [last.outputs[0]])
    with pytest.raises(VerificationError, match=r"graph 'chain' has a cycle: op 'relu' \(relu, layer 'act'\) -> "
                                                r"op 'relu_1' \(relu, layer 'act'\) -> op 'relu_2'.* -> op 'relu' "):
        verify(g)


def test_self_loop():
    g = chain(1)
    op = g.ops()[0]
    g.set_op_inputs(op.id, [op.outputs[0]])
    with pytest.raises(VerificationError, match=r"cycle: op 'relu' \(relu, layer 'act'\) -> op 'relu'"):
        verify(g)


def test_undefined_input():
    g = chain(2)
    op = g.ops()[1]
    op.inputs.append("ghost")  # behind the API's back
    with pytest.raises(VerificationError, match=r"op 'relu_1' \(relu, layer 'act'\) reads 'ghost' before it is "
                                                "defined"):
        verify(g)


def test_type_mismatch_with_the_shape_rule():
    g = dense_graph()
    op = next(o for o in g.ops() if o.type == "matmul" and o.layer == "head")
    value = g.values[op.outputs[0]]
    value.type = TensorType("float32", ("batch", 3))
    verify(g)  # structurally fine
    with pytest.raises(VerificationError, match=r"op 'matmul_1' \(matmul, layer 'head'\) output 'matmul_1' is typed "
                                                r"f32\[batch, 3\] but its rule gives f32\[batch, 2\]"):
        verify(g, infer_op)


def test_dtype_mismatch_with_the_shape_rule():
    g = dense_graph()
    op = next(o for o in g.ops() if o.type == "relu")
    g.values[op.outputs[0]].type = TensorType("int32", ("batch", 4))
    with pytest.raises(VerificationError, match=r"\(relu, layer 'hidden'\) output .* is typed i32\[batch, 4\] but "
                                                r"its rule gives f32\[batch, 4\]"):
        verify(g, infer_op)


def test_rule_refuses_the_inputs():
    g = Graph("bad")
    x = g.add_input("x", f32("batch", 3))
    w = g.add_constant("w", np.zeros((5, 2), np.float32))
    g.set_outputs([g.add_op("matmul", [x, w], [f32("batch", 2)], layer="proj").outputs[0]])
    with pytest.raises(VerificationError, match=r"op 'matmul' \(matmul, layer 'proj'\): .*3.*5"):
        verify(g, infer_op)


def test_wrong_number_of_outputs_for_the_rule():
    g = Graph("split")
    x = g.add_input("x", f32(4))
    g.set_outputs(g.add_op("relu", [x], [f32(4), f32(4)], layer="r").outputs)
    with pytest.raises(VerificationError, match=r"op 'relu' \(relu, layer 'r'\) has 2 outputs, its rule gives 1"):
        verify(g, infer_op)


def test_constant_data_disagrees_with_its_type():
    g = tiny()
    g.constants["dense/bias"] = np.zeros(3, np.float32)
    with pytest.raises(VerificationError, match=r"constant 'dense/bias' is declared f32\[2\] but holds f32\[3\]"):
        verify(g)
    del g.constants["dense/bias"]
    with pytest.raises(VerificationError, match="constant 'dense/bias' has no data"):
        verify(g)


def test_inputs_and_outputs():
    g = tiny()
    g.outputs.append("nowhere")
    with pytest.raises(VerificationError, match="graph output 'nowhere' is not defined"):
        verify(g)
    g = tiny()
    g.inputs.append("dense/bias")
    with pytest.raises(VerificationError, match="graph input 'dense/bias' is not declared as an input value"):
        verify(g)
    g = tiny()
    g.inputs.remove("ids")
    with pytest.raises(VerificationError, match="value 'ids' is an input but not listed in graph.inputs"):
        verify(g)


def test_output_records():
    g = chain(2)
    first = g.ops()[0]
    g.values[first.outputs[0]].producer = "relu_1"
    with pytest.raises(VerificationError, match=r"op 'relu' \(relu, layer 'act'\) output 'relu' is not recorded as "
                                                "produced by it"):
        verify(g)


def test_orphan_values():
    g = chain(1)
    g.values["stray"] = Value("stray", f32(1), "op", producer="gone")
    with pytest.raises(VerificationError, match=r"values \['stray'\] have no producing op"):
        verify(g)


def test_graphc_verify_uses_the_registry():
    g = dense_graph()
    op = next(o for o in g.ops() if o.type == "bias_add")
    g.values[op.outputs[0]].type = TensorType("float32", ("batch", 5))
    with pytest.raises(VerificationError, match=r"\(bias_add, layer 'hidden'\).*rule gives f32\[batch, 4\]"):
        graphc.verify(g)
