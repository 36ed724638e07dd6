"""The reference interpreter: input validation (each message names the input) and running graphs."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference.interpreter import InputError, OpExecutionError, bind_inputs, run
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder


def three_inputs() -> tuple[Graph, dict[str, np.ndarray]]:
    """x: f32[batch, n, 3], ids: i32[batch, n], half: f32[batch, (n + 1) // 2] -> relu(x), ids as floats."""
    g = Graph("g")
    x = g.add_input("x", TensorType("float32", ("batch", "n", 3)))
    ids = g.add_input("ids", TensorType("int32", ("batch", "n")))
    g.add_input("half", TensorType("float32", ("batch", "(n + 1) // 2")))
    b = OpBuilder(g, "lay")
    g.set_outputs([b.relu(x), b.cast(ids, dtype="float32")])
    feeds = {"x": np.linspace(-1, 1, 30).reshape(2, 5, 3), "ids": np.arange(10).reshape(2, 5),
             "half": np.ones((2, 3))}
    return g, feeds


def test_valid_feeds_bind_free_dims_and_convert():
    g, feeds = three_inputs()
    arrays, bindings = bind_inputs(g, feeds)
    assert bindings == {"batch": 2, "n": 5}
    assert arrays["x"].dtype == np.float32 and arrays["ids"].dtype == np.int32
    out = run(g, feeds)
    assert list(out) == g.outputs
    assert np.array_equal(out[g.outputs[0]], np.maximum(feeds["x"], 0).astype(np.float32))
    assert np.array_equal(out[g.outputs[1]], feeds["ids"].astype(np.float32))


@pytest.mark.parametrize("n", [1, 3, 17])
def test_other_lengths(n):
    g, _ = three_inputs()
    feeds = {"x": np.zeros((1, n, 3)), "ids": np.zeros((1, n), np.int64), "half": np.zeros((1, (n + 1) // 2))}
    assert run(g, feeds)[g.outputs[1]].shape == (1, n)


def test_feeds_that_are_lists_bools_and_integral_floats():
    g, feeds = three_inputs()
    out = run(g, {**feeds, "x": feeds["x"].tolist(), "ids": feeds["ids"].astype(np.float64),
                  "half": np.ones((2, 3), bool)})
    assert np.array_equal(out[g.outputs[1]], feeds["ids"].astype(np.float32))


def _bad(feeds, **changes):
    out = {k: v for k, v in feeds.items() if k not in changes or changes[k] is not None}
    out.update({k: v for k, v in changes.items() if v is not None})
    return out


@pytest.mark.parametrize("changes, message", [
    ({"ids": None}, r"missing input\(s\) \['ids'\]; the graph takes \['x', 'ids', 'half'\]"),
    ({"zz": np.ones(1)}, r"unknown input\(s\) \['zz'\]"),
    ({"x": np.ones((2, 5))}, r"input 'x' expects shape \(None, None, 3\) \(rank 3\), got shape \(2, 5\)"),
    ({"x": np.ones((2, 5, 4))}, r"input 'x' expects shape \(None, None, 3\), got \(2, 5, 4\) "
                                r"\(axis 2: expected 3, got 4\)"),
    ({"ids": np.zeros((2, 6), int)}, r"input 'ids': free dimension 'n' \(axis 1\) is 6, but another input gives "
                                     r"it 5"),
    ({"ids": np.zeros((3, 5), int)}, r"input 'ids': free dimension 'batch' \(axis 0\) is 3, but another input "
                                     r"gives it 2"),
    ({"half": np.ones((2, 2))}, r"input 'half' axis 1 must be \(n \+ 1\) // 2 = 3"),
    ({"ids": np.full((2, 5), 0.5)}, r"input 'ids' expects integer ids \(int32\), got float64"),
    ({"ids": np.full((2, 5), np.nan)}, r"input 'ids' expects integer ids \(int32\), got float64"),
    ({"ids": np.full((2, 5), 2 ** 40)}, r"input 'ids': values from 1099511627776 to 1099511627776 do not fit int32"),
    ({"ids": np.full((2, 5), -1.0) * 2 ** 35}, r"input 'ids': values from .* do not fit int32"),
    ({"ids": np.ones((2, 5), bool)}, r"input 'ids' expects integer ids \(int32\), got bool"),
    ({"x": np.full((2, 5, 3), "a")}, r"input 'x' expects float32, got <U1"),
    ({"x": np.array([None])}, r"input 'x': cannot use an array of Python objects"),
])
def test_bad_feeds_name_the_input(changes, message):
    g, feeds = three_inputs()
    with pytest.raises(InputError, match=message):
        run(g, _bad(feeds, **changes))


def test_missing_and_unknown_together():
    g, feeds = three_inputs()
    with pytest.raises(InputError, match=r"missing input\(s\) \['half'\]; unknown input\(s\) \['Half'\]"):
        run(g, {"x": feeds["x"], "ids": feeds["ids"], "Half": feeds["half"]})


def test_op_failure_names_op_and_layer():
    g = Graph("fail")
    x = g.add_input("x", TensorType("float32", (2, 3)))
    w = g.add_constant("w", np.ones((4, 2), np.float32))
    y = g.add_op("matmul", [x, w], [TensorType("float32", (2, 2))], layer="proj").outputs[0]  # mistyped
    g.set_outputs([y])
    with pytest.raises(OpExecutionError, match=r"op 'matmul' \(matmul, layer 'proj'\) failed on inputs of shape "
                                               r"\(2, 3\), \(4, 2\)"):
        run(g, {"x": np.ones((2, 3))})


def test_intermediate_values_freed_unless_kept():
    g = Graph("chain")
    v = x = g.add_input("x", TensorType("float32", (3,)))
    b = OpBuilder(g, "c")
    for _ in range(3):
        v = b.relu(v)
    g.set_outputs([v])
    assert set(run(g, {"x": np.ones(3)})) == {v}
    kept = run(g, {"x": np.ones(3)}, keep=True)
    assert {x, v, "relu", "relu_1"} <= set(kept)


def test_an_input_that_is_also_an_output():
    g = Graph("pass")
    x = g.add_input("x", TensorType("float32", ("batch",)))
    g.set_outputs([x])
    got = run(g, {"x": np.arange(3)})
    assert got["x"].dtype == np.float32 and got["x"].tolist() == [0.0, 1.0, 2.0]
