"""Normalization ops: batch_norm and layer_norm vs NumPy formulas, symbolic shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder, ShapeError, get
from tests.helpers import assert_close


def _run(op, x, params, x_shape=None, **attrs):
    g = Graph(op)
    xv = g.add_input("x", TensorType("float32", tuple(x_shape or x.shape)))
    pv = [g.add_constant(f"p{i}", p) for i, p in enumerate(params)]
    y = OpBuilder(g, "norm").emit(op, xv, *pv, **attrs)
    g.set_outputs([y])
    return run(g, {"x": x})[y], g.type_of(y)


def bn_formula(x, gamma, beta, mean, var, axis, eps):
    """Keras's arrangement: x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps), in float64."""
    x = x.astype(np.float64)
    shape = [1] * x.ndim
    shape[axis] = -1
    inv = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return x * inv.reshape(shape) + (beta - mean * inv).reshape(shape)


def _bn_params(rng, c):
    return [rng.normal(size=c).astype("float32"), rng.normal(size=c).astype("float32"),
            rng.normal(size=c).astype("float32"), rng.uniform(0.1, 3.0, size=c).astype("float32")]


@pytest.mark.parametrize("shape,axis", [((1, 1), -1), ((3, 17), -1), ((3, 17), 1), ((7, 3), 0),
                                        ((3, 5, 5, 7), -1), ((1, 3, 4, 5), 1), ((3, 5, 7, 2), 2),
                                        ((3, 7, 1), 1)])
@pytest.mark.parametrize("eps", [1e-3, 0.5])
def test_batch_norm_matches_formula(shape, axis, eps, rng):
    x = rng.normal(size=shape).astype("float32")
    params = _bn_params(rng, shape[axis])
    y, t = _run("batch_norm", x, params, axis=axis, epsilon=eps)
    assert t.shape == shape and y.dtype == np.float32
    assert_close(y, bn_formula(x, *params, axis % len(shape), eps), rtol=1e-5, atol=1e-5)


def test_batch_norm_defaults_and_symbolic_dims(rng):
    opdef = get("batch_norm")
    assert opdef.resolve_attrs({}) == {"axis": -1, "epsilon": 1e-3}
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    params = _bn_params(rng, 4)
    y, t = _run("batch_norm", x, params, x_shape=("batch", "T", 4))
    assert t.shape == ("batch", "T", 4)
    assert_close(y, bn_formula(x, *params, 2, 1e-3), rtol=1e-5, atol=1e-5)
    # A symbolic channel axis is accepted (the parameters fix its size at run time).
    t = opdef.infer_types([TensorType("float32", ("batch", "c"))] + [TensorType("float32", (4,))] * 4,
                          opdef.resolve_attrs({}))
    assert t[0].shape == ("batch", "c")


def _bn_types(x_shape, c_shapes, dtype="float32"):
    return [TensorType(dtype, x_shape)] + [TensorType("float32", s) for s in c_shapes]


@pytest.mark.parametrize("types,attrs,message", [
    (_bn_types((2, 5), [(4,)] * 4), {}, "gamma of shape (4,) does not match axis -1 (size 5)"),
    (_bn_types((2, 5), [(5,), (5,), (5,), (3,)]), {}, "moving_variance of shape (3,)"),
    (_bn_types((2, 5), [(5,), (5, 1), (5,), (5,)]), {}, "beta of shape (5, 1)"),
    (_bn_types((2, 5), [(5,)] * 4), {"axis": 2}, "axis 2 is out of range for rank 2"),
    (_bn_types((2, 5), [(5,)] * 4), {"epsilon": 0.0}, "epsilon must be positive"),
    (_bn_types((2, 5), [(5,)] * 4, dtype="int32"), {}, "must be a float tensor, got int32"),
    (_bn_types((2, 5), [(5,)] * 4, dtype="float64"), {}, "different dtypes"),
    (_bn_types((2, 5), [(5,)] * 3), {}, "takes 5 inputs, got 4"),
])
def test_batch_norm_errors(types, attrs, message):
    opdef = get("batch_norm")
    with pytest.raises(ShapeError) as err:
        opdef.infer_types(types, opdef.resolve_attrs(attrs))
    assert message in str(err.value)


# ---------------------------------------------------------------- layer_norm
def ln_formula(x, gamma, beta, axes, eps):
    x = x.astype(np.float64)
    axes = tuple(sorted(a % x.ndim for a in axes))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("shape,axes", [((3, 17), (-1,)), ((1, 1), (1,)), ((3, 7, 5), (-1,)), ((3, 7, 5), (1,)),
                                        ((3, 7, 5), (1, 2)), ((2, 3, 4, 5), (1, 3)), ((2, 3, 4, 5), (-1, 1))])
def test_layer_norm_matches_formula(shape, axes, rng):
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    pshape = tuple(shape[a] for a in sorted(a % len(shape) for a in axes))
    gamma, beta = rng.normal(size=pshape).astype("float32"), rng.normal(size=pshape).astype("float32")
    y, t = _run("layer_norm", x, [gamma, beta], axes=axes, epsilon=1e-3)
    assert t.shape == shape
    assert_close(y, ln_formula(x, gamma, beta, axes, 1e-3), rtol=1e-5, atol=1e-5)


def test_layer_norm_symbolic_dims(rng):
    x = rng.normal(size=(2, 9, 6)).astype("float32")
    gamma, beta = np.ones(6, "float32"), np.zeros(6, "float32")
    y, t = _run("layer_norm", x, [gamma, beta], x_shape=("batch", "T", 6), axes=(-1,), epsilon=1e-5)
    assert t.shape == ("batch", "T", 6)
    assert_close(y.mean(-1), np.zeros((2, 9)), atol=1e-5)
    assert_close(y.var(-1), np.full((2, 9), 1.0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("x_shape,p_shape,axes,message", [
    ((2, 5), (4,), (-1,), "gamma of shape (4,) does not match axes (-1,) (5,)"),
    ((2, 3, 5), (5,), (1, 2), "gamma of shape (5,) does not match axes (1, 2) (3, 5)"),
    ((2, 5), (5,), (2,), "axis 2 is out of range for rank 2"),
    ((2, 5), (5,), (), "at least one axis"),
    ((2, 5), (5, 5), (1, -1), "repeat an axis"),
])
def test_layer_norm_errors(x_shape, p_shape, axes, message):
    opdef = get("layer_norm")
    types = [TensorType("float32", x_shape), TensorType("float32", p_shape), TensorType("float32", p_shape)]
    with pytest.raises(ShapeError) as err:
        opdef.infer_types(types, opdef.resolve_attrs({"axes": axes}))
    assert message in str(err.value)
    with pytest.raises(ValueError, match="needs attribute 'axes'"):
        opdef.resolve_attrs({})
    with pytest.raises(ShapeError, match="epsilon must be positive"):
        opdef.infer_types([TensorType("float32", (2, 5))] + [TensorType("float32", (5,))] * 2,
                          opdef.resolve_attrs({"axes": (-1,), "epsilon": -1.0}))
