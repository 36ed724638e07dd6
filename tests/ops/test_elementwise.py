"""Elementwise ops: activations against independent float64 formulas, broadcasting binaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder, ShapeError, get

SHAPES = [(1,), (3, 7), (2, 1, 17)]


def formula(name, x):
    """Each activation written out independently of graphc, in float64."""
    x = x.astype(np.float64)
    sig = 1 / (1 + np.exp(-x))
    return {
        "relu": np.where(x > 0, x, 0.0),
        "sigmoid": sig,
        "tanh": np.tanh(x),
        "exp": np.exp(x),
        "log": np.log(np.abs(x) + 0.5),
        "neg": -x,
        "abs": np.abs(x),
        "sqrt": np.sqrt(np.abs(x)),
        "square": x * x,
        "reciprocal": 1 / (np.abs(x) + 0.5),
        "softplus": np.log1p(np.exp(x)),
        "softsign": x / (1 + np.abs(x)),
        "selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
        "elu": np.where(x > 0, x, np.exp(x) - 1),
        "gelu": np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape),
        "hard_sigmoid": np.clip(x / 6 + 0.5, 0, 1),
        "silu": x * sig,
    }[name]


def run_op(op, arrays, **attrs):
    g = Graph()
    names = [g.add_input(f"x{i}", TensorType.of(a)) for i, a in enumerate(arrays)]
    g.set_outputs([OpBuilder(g).emit(op, *names, **attrs)])
    out = get(op).reference(*arrays, **get(op).resolve_attrs(attrs))
    assert TensorType.of(np.asarray(out)).shape == g.type_of(g.outputs[0]).shape
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "exp", "neg", "abs", "square", "softplus",
                                  "softsign", "selu", "elu", "gelu", "hard_sigmoid", "silu"])
def test_activation_matches_formula(name, shape, rng):
    x = rng.normal(0, 2, size=shape).astype(np.float32)
    got = run_op(name, [x])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, formula(name, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["log", "sqrt", "reciprocal"])
def test_domain_restricted_unaries(name, rng):
    x = rng.normal(0, 2, size=(3, 7)).astype(np.float32)
    safe = np.abs(x) + 0.5 if name != "sqrt" else np.abs(x)
    np.testing.assert_allclose(run_op(name, [safe.astype(np.float32)]), formula(name, x), rtol=1e-5)


def test_relu_variants_and_gelu_approximation(rng):
    x = rng.normal(0, 4, size=(17,)).astype(np.float32)
    np.testing.assert_allclose(run_op("relu", [x], max_value=6.0), np.clip(x, 0, 6))
    np.testing.assert_allclose(run_op("relu", [x], negative_slope=0.1), np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    c = math.sqrt(2 / math.pi)
    want = 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(run_op("gelu", [x], approximate=True), want, rtol=1e-5, atol=1e-6)


def test_extreme_inputs_stay_finite():
    x = np.array([-1e4, -80.0, 0.0, 80.0, 1e4], dtype=np.float32)
    for name in ["sigmoid", "tanh", "softplus", "softsign", "elu", "selu", "silu", "hard_sigmoid"]:
        out = run_op(name, [x])
        assert np.isfinite(out).all() or name == "softplus" and np.isinf(out[-1]), name
    assert run_op("sigmoid", [x])[0] == 0.0 and run_op("sigmoid", [x])[-1] == 1.0


@pytest.mark.parametrize("op,fn", [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                                   ("div", np.divide), ("maximum", np.maximum), ("minimum", np.minimum)])
@pytest.mark.parametrize("shapes", [((3, 7), (3, 7)), ((3, 7), (7,)), ((1, 7), (3, 1)), ((2, 1, 5), (3, 1))])
def test_binary_broadcasting(op, fn, shapes, rng):
    a = rng.normal(size=shapes[0]).astype(np.float32)
    b = rng.normal(size=shapes[1]).astype(np.float32) + 3.0
    np.testing.assert_allclose(run_op(op, [a, b]), fn(a, b), rtol=1e-6)


def test_binary_shape_rule_with_symbolic_dims():
    g = Graph()
    a = g.add_input("a", TensorType("float32", ("batch", 7)))
    b = g.add_input("b", TensorType("float32", (1, 7)))
    c = g.add_input("c", TensorType("float32", ("batch", 1)))
    b_ = OpBuilder(g)
    assert g.type_of(b_.add(a, b)).shape == ("batch", 7)
    assert g.type_of(b_.mul(c, b)).shape == ("batch", 7)
    d = g.add_input("d", TensorType("float32", (5,)))
    with pytest.raises(ShapeError, match=r"\(batch, 7\) and \(5,\) cannot be broadcast"):
        b_.add(a, d)
    i = g.add_input("i", TensorType("int32", ("batch", 7)))
    with pytest.raises(ShapeError, match="different dtypes"):
        b_.add(a, i)


def test_add_n_cast_clip_identity_dropout(rng):
    xs = [rng.normal(size=(3, 7)).astype(np.float32) for _ in range(3)]
    np.testing.assert_allclose(run_op("add_n", xs), xs[0] + xs[1] + xs[2], rtol=1e-6)
    assert run_op("cast", [xs[0]], dtype="int32").dtype == np.int32
    np.testing.assert_array_equal(run_op("clip", [xs[0]], min=-0.5, max=0.5), np.clip(xs[0], -0.5, 0.5))
    np.testing.assert_array_equal(run_op("identity", [xs[0]]), xs[0])
    np.testing.assert_array_equal(run_op("dropout", [xs[0]], rate=0.3), xs[0])
    with pytest.raises(ShapeError, match="rate"):
        run_op("dropout", [xs[0]], rate=1.5)


def test_unary_refuses_integer_tensors():
    g = Graph()
    i = g.add_input("i", TensorType("int32", (3,)))
    with pytest.raises(ShapeError, match="float tensor"):
        OpBuilder(g, layer="act").relu(i)


def test_unknown_and_missing_attributes_are_named():
    g = Graph()
    x = g.add_input("x", TensorType("float32", (3,)))
    with pytest.raises(ValueError, match="no attribute"):
        OpBuilder(g).emit("relu", x, alpha=2.0)
    with pytest.raises(ValueError, match="needs attribute 'shape'"):
        OpBuilder(g).emit("reshape", x)
