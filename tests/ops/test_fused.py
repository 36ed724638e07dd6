"""Fused ops: each against the unfused sequence of primitive references, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.types import TensorType
from graphc.ops import ShapeError, get
from graphc.ops.elementwise import apply_activation
from tests.helpers import assert_close

conv = get("conv").reference


def epilogue(y, bias=None, act="linear", act_attrs=(), residual=None, post="linear", post_attrs=()):
    if bias is not None:
        y = y + bias
    y = apply_activation(act, y, **dict(act_attrs))
    if residual is not None:
        y = apply_activation(post, y + residual, **dict(post_attrs))
    return y


def attrs(bias, residual, act="linear", act_attrs=(), post="linear", post_attrs=()):
    return dict(has_bias=bias is not None, has_residual=residual is not None, activation=act,
                activation_attrs=act_attrs, post_activation=post, post_activation_attrs=post_attrs)


def extra(bias, residual):
    return [a for a in (bias, residual) if a is not None]


@pytest.mark.parametrize("shape", [(1, 7), (3, 17), (2, 3, 5, 7)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("act", [("linear", ()), ("relu", ()), ("relu", (("max_value", 6.0),)), ("tanh", ())])
def test_fused_matmul(shape, with_bias, with_residual, act, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[-1], 3)).astype(np.float32)
    y0 = (x.reshape(-1, shape[-1]) @ w).reshape(shape[:-1] + (3,))
    bias = rng.standard_normal(3).astype(np.float32) if with_bias else None
    res = rng.standard_normal(y0.shape).astype(np.float32) if with_residual else None
    a = attrs(bias, res, *act, post="sigmoid")
    got = get("fused_matmul").reference(x, w, *extra(bias, res), **a)
    assert got.dtype == np.float32
    assert_close(got, epilogue(y0, bias, *act, res, "sigmoid"))
    types = [TensorType.of(v) for v in (x, w, *extra(bias, res))]
    assert get("fused_matmul").infer_types(types, {**get("fused_matmul").attrs, **a}) == [TensorType.of(got)]


@pytest.mark.parametrize("groups,cg", [(1, 3), (3, 1), (3, 2)])
@pytest.mark.parametrize("strides,pads", [((1, 1), ((1, 1), (1, 1))), ((2, 1), ((0, 1), (1, 0)))])
def test_fused_conv(groups, cg, strides, pads, rng):
    x = rng.standard_normal((2, 7, 5, groups * cg)).astype(np.float32)
    w = rng.standard_normal((3, 3, cg, groups * 2)).astype(np.float32)
    conv_attrs = dict(strides=strides, dilations=(1, 1), pads=pads, groups=groups)
    y0 = conv(x, w, **conv_attrs)
    bias = rng.standard_normal(groups * 2).astype(np.float32)
    res = rng.standard_normal(y0.shape).astype(np.float32)
    got = get("fused_conv").reference(x, w, bias, res, **conv_attrs, **attrs(bias, res, "elu", (), "relu"))
    assert_close(got, epilogue(y0, bias, "elu", (), res, "relu"))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_fused_separable_conv(multiplier, rng):
    c = 3
    x = rng.standard_normal((1, 9, 8, c)).astype(np.float32)
    dw = rng.standard_normal((3, 3, 1, c * multiplier)).astype(np.float32)
    pw = rng.standard_normal((c * multiplier, 5)).astype(np.float32)
    conv_attrs = dict(strides=(1, 2), dilations=(1, 1), pads=((1, 1), (1, 1)), groups=c)
    d = conv(x, dw, **conv_attrs)
    bias = rng.standard_normal(5).astype(np.float32)
    got = get("fused_separable_conv").reference(x, dw, pw, bias, **conv_attrs, **attrs(bias, None, "relu"))
    assert_close(got, epilogue(np.einsum("nhwc,co->nhwo", d, pw), bias, "relu"))
    types = [TensorType.of(v) for v in (x, dw, pw, bias)]
    full = {**get("fused_separable_conv").attrs, **conv_attrs, **attrs(bias, None, "relu")}
    assert get("fused_separable_conv").infer_types(types, full) == [TensorType.of(got)]


def test_scale_shift(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    s, t = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    assert_close(get("scale_shift").reference(x, s, t, axis=1), x * s[:, None] + t[:, None])
    assert get("scale_shift").infer_types([TensorType.of(v) for v in (x, s, t)], {"axis": 1}) == [TensorType.of(x)]


def _infer(op, types, **kw):
    d = get(op)
    return d.infer_types(types, {**d.attrs, **kw})


F = lambda *shape: TensorType("float32", shape)  # noqa: E731


@pytest.mark.parametrize("op,types,kw,message", [
    ("fused_matmul", [F(2, 3), F(3, 4)], {"has_bias": True}, "takes 3 inputs, got 2"),
    ("fused_matmul", [F(2, 3), F(3, 4), F(5)], {"has_bias": True}, r"bias of shape \(5,\) does not match the 4"),
    ("fused_matmul", [F(2, 3), F(3, 4), F(2, 5)], {"has_residual": True}, r"residual of shape \(2, 5\)"),
    ("fused_matmul", [F(2, 3), F(3, 4)], {"activation": "softmax"}, "unknown activation 'softmax'"),
    ("fused_matmul", [F(2, 3), F(3, 4)], {"activation": "relu", "activation_attrs": (("alpha", 1.0),)},
     r"activation 'relu' has no attribute\(s\) \['alpha'\]"),
    ("fused_matmul", [F(2, 3), F(3, 4)], {"post_activation": "nope"}, "unknown post_activation 'nope'"),
    ("fused_matmul", [F(2, 3), F(2, 3, 4)], {}, "weight must be 2-D"),
    ("fused_matmul", [F(2, 3), F(5, 4)], {}, "contraction mismatch"),
    ("fused_conv", [F(1, 5, 5, 3), F(3, 3, 4, 2)], {}, "3 channels but the kernel"),
    ("fused_separable_conv", [F(1, 5, 5, 3), F(3, 3, 1, 3), F(4, 2)], {"groups": 3},
     r"pointwise kernel \(4, 2\) must be \(3, out_channels\)"),
    ("fused_separable_conv", [F(1, 5, 5, 4), F(3, 3, 2, 4), F(4, 2)], {"groups": 2}, "is not depthwise"),
    ("scale_shift", [F(2, 3), F(3), F(2)], {}, r"shift of shape \(2,\) does not match axis -1"),
])
def test_shape_errors_name_the_problem(op, types, kw, message):
    with pytest.raises(ShapeError, match=message):
        _infer(op, types, **kw)
