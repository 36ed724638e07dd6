"""The IR's text form: stable, complete and diffable."""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, TensorType
from graphc.ir.printer import format_attr, format_graph
from tests.ir.graphs import TINY_TEXT, chain, f32, tiny


def test_golden_text():
    assert str(tiny()) == TINY_TEXT


def test_text_is_stable_across_builds_and_copies():
    assert str(tiny()) == str(tiny()) == str(tiny().copy())


def test_without_constants():
    text = format_graph(tiny(), show_constants=False)
    assert "const %" not in text and "%matmul: f32[batch, 2] = matmul(%x, %dense/kernel)  # dense" in text


def test_ops_print_in_topological_order_whatever_the_insertion_order():
    g = Graph("late")
    x = g.add_input("x", f32(2))
    a = g.add_op("relu", [x], [f32(2)], name="a").outputs[0]
    g.add_op("neg", [x], [f32(2)], name="b")
    c = g.add_op("add", [a, "b"], [f32(2)], name="c").outputs[0]
    g.set_outputs([c])
    lines = str(g).splitlines()
    assert [line.split(" = ")[1].split("(")[0] for line in lines if " = " in line] == ["relu", "neg", "add"]


def test_symbolic_dims_and_dtypes_print_as_written():
    g = Graph("dims")
    x = g.add_input("x", TensorType("int64", ("batch", "(text_len - 4) // 2 + 1", 7)))
    g.add_constant("flag", np.array([True, False]))
    g.set_outputs([x])
    text = str(g)
    assert "input %x: i64[batch, (text_len - 4) // 2 + 1, 7]" in text
    assert "const %flag: bool[2]" in text and "  return %x" in text


def test_format_attr():
    assert format_attr([1, (2, 3)]) == "[1, [2, 3]]"
    assert format_attr(0.1) == "0.1" and format_attr(1e-7) == "1e-07"
    assert format_attr("relu") == "relu" and format_attr("a b") == "'a b'" and format_attr("1x") == "'1x'"
    assert format_attr(None) == "None" and format_attr(True) == "True"


def test_repr_counts():
    assert repr(chain(3)) == "<graphc.ir.Graph 'chain': 1 inputs, 3 ops, 1 outputs>"
