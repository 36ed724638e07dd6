"""Normalization ops: ``batch_norm`` (inference form) and ``layer_norm``.

``batch_norm(x, gamma, beta, mean, variance; axis, epsilon)`` normalizes with given
statistics, each a vector along ``axis``: ``(x - mean) / sqrt(variance + epsilon) * gamma
+ beta``. It is the inference form of Keras's BatchNormalization (moving statistics); a
layer without ``scale``/``center`` passes ones/zeros, so the op always has five inputs and
folding it into a preceding convolution needs no special cases.

``layer_norm(x, gamma, beta; axes, epsilon)`` normalizes with the mean and (biased)
variance of ``x`` over ``axes``; ``gamma`` and ``beta`` have the shape of those axes.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import dims
from graphc.ops.common import fmt_shape, norm_axis, require_float, same_dtype
from graphc.ops.registry import REQUIRED, OpDef, ShapeError, get, register


def _check_epsilon(op: str, epsilon) -> None:
    if not epsilon > 0:
        raise ShapeError(f"{op} epsilon must be positive, got {epsilon}")


def _param_shape(x_shape: tuple, axes: tuple[int, ...]) -> tuple[int, ...]:
    """Where per-axis parameters broadcast against an input of rank ``len(x_shape)``."""
    return tuple(d if i in axes else 1 for i, d in enumerate(x_shape))


# ---------------------------------------------------------------- batch_norm
_BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")


def _batch_norm_infer(types, *, axis, epsilon):
    x = types[0]
    require_float(x, "batch_norm input")
    same_dtype(types, "batch_norm operands")
    _check_epsilon("batch_norm", epsilon)
    ax = norm_axis(axis, x.rank)
    for name, t in zip(_BN_PARAMS, types[1:]):
        if t.rank != 1 or not dims.compatible(t.shape[0], x.shape[ax]):
            raise ShapeError(f"batch_norm {name} of shape {fmt_shape(t.shape)} does not match axis {axis} "
                             f"(size {x.shape[ax]}) of input {fmt_shape(x.shape)}")
    return x


def _batch_norm(x, gamma, beta, mean, variance, *, axis, epsilon):
    shape = _param_shape(x.shape, (axis % x.ndim,))
    scale = gamma / np.sqrt(variance + np.asarray(epsilon, dtype=variance.dtype))
    y = (x - mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)
    return y.astype(x.dtype, copy=False)


register(OpDef("batch_norm", _batch_norm_infer, _batch_norm, attrs={"axis": -1, "epsilon": 1e-3},
               num_inputs=5, fusion_kind="broadcast",
               doc="(x - mean) / sqrt(variance + epsilon) * gamma + beta along one axis "
                   "(inputs: x, gamma, beta, mean, variance)."))


# ---------------------------------------------------------------- layer_norm
def _layer_norm_axes(axes, rank: int) -> tuple[int, ...]:
    if not axes:
        raise ShapeError("layer_norm needs at least one axis")
    out = sorted({norm_axis(a, rank) for a in axes})
    if len(out) != len(axes):
        raise ShapeError(f"layer_norm axes {tuple(axes)} repeat an axis")
    return tuple(out)


def _layer_norm_infer(types, *, axes, epsilon):
    x = types[0]
    require_float(x, "layer_norm input")
    same_dtype(types, "layer_norm operands")
    _check_epsilon("layer_norm", epsilon)
    axs = _layer_norm_axes(axes, x.rank)
    want = tuple(x.shape[a] for a in axs)
    for name, t in zip(("gamma", "beta"), types[1:]):
        if t.rank != len(want) or not all(dims.compatible(a, b) for a, b in zip(t.shape, want)):
            raise ShapeError(f"layer_norm {name} of shape {fmt_shape(t.shape)} does not match axes "
                             f"{tuple(axes)} {fmt_shape(want)} of input {fmt_shape(x.shape)}")
    return x


def _layer_norm(x, gamma, beta, *, axes, epsilon):
    axs = tuple(sorted(a % x.ndim for a in axes))
    shape = _param_shape(x.shape, axs)
    mean = np.mean(x, axis=axs, keepdims=True)
    centered = x - mean
    variance = np.mean(np.square(centered), axis=axs, keepdims=True)
    y = centered / np.sqrt(variance + np.asarray(epsilon, dtype=x.dtype))
    return (y * gamma.reshape(shape) + beta.reshape(shape)).astype(x.dtype, copy=False)


register(OpDef("layer_norm", _layer_norm_infer, _layer_norm, attrs={"axes": REQUIRED, "epsilon": 1e-3},
               num_inputs=3, fusion_kind="reduction",
               doc="(x - mean) / sqrt(var + epsilon) * gamma + beta with the moments of x over `axes` "
                   "(inputs: x, gamma, beta)."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext).

def _batch_norm_to_onnx(ctx, op):
    """ONNX BatchNormalization normalizes axis 1: other axes are transposed there and back."""
    x = ctx.input_type(0)
    ax = ctx.attrs["axis"] % x.rank
    params = [ctx.input_name(i) for i in range(1, 5)]
    eps = float(ctx.attrs["epsilon"])
    if x.rank < 2:
        gamma, beta, mean, var = params
        scale = ctx.node("Div", [gamma, ctx.node("Sqrt", [ctx.node("Add", [var, ctx.scalar(eps, x.dtype)])])])
        centered = ctx.node("Sub", [ctx.input_name(0), mean])
        ctx.node("Add", [ctx.node("Mul", [centered, scale]), beta], ctx.output_name(0))
        return
    if ax == 1:
        ctx.node("BatchNormalization", [ctx.input_name(0), *params], ctx.output_name(0), epsilon=eps)
        return
    perm = [0, ax, *[i for i in range(1, x.rank) if i != ax]] if ax else [1, 0, *range(2, x.rank)]
    inverse = [perm.index(i) for i in range(x.rank)]
    y = ctx.node("BatchNormalization", [ctx.transpose(ctx.input_name(0), perm), *params], epsilon=eps)
    ctx.transpose(y, inverse, ctx.output_name(0))


def _layer_norm_to_onnx(ctx, op):
    """ONNX LayerNormalization (opset 17) when the axes are the trailing ones, else its formula."""
    x = ctx.input_type(0)
    axes = _layer_norm_axes(ctx.attrs["axes"], x.rank)
    eps = float(ctx.attrs["epsilon"])
    if ctx.opset >= 17 and axes == tuple(range(axes[0], x.rank)):
        ctx.node("LayerNormalization", [ctx.input_name(0), ctx.input_name(1), ctx.input_name(2)],
                 ctx.output_name(0), axis=axes[0], epsilon=eps)
        return
    shape = [int(ctx.input_type(1).shape[axes.index(i)]) if i in axes else 1 for i in range(x.rank)]
    gamma, beta = (ctx.derived(i, lambda v: v.reshape(shape), "bcast")
                   or ctx.node("Reshape", [ctx.input_name(i), ctx.ints(shape)]) for i in (1, 2))
    mean = ctx.reduce("ReduceMean", ctx.input_name(0), list(axes), True)
    centered = ctx.node("Sub", [ctx.input_name(0), mean])
    var = ctx.reduce("ReduceMean", ctx.node("Mul", [centered, centered]), list(axes), True)
    std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.scalar(eps, x.dtype)])])
    y = ctx.node("Mul", [ctx.node("Div", [centered, std]), gamma])
    ctx.node("Add", [y, beta], ctx.output_name(0))


get("batch_norm").to_onnx = _batch_norm_to_onnx
get("layer_norm").to_onnx = _layer_norm_to_onnx


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext), written with other
# ops. batch_norm: with r = 1/sqrt(var + eps) and xc = x - mean (vectors along ``axis``),
# dx = dy*gamma*r, dgamma = sum(dy*xc)*r, dbeta = sum(dy), dmean = -sum(dy)*gamma*r,
# dvar = -sum(dy*xc)*gamma*r^3/2. layer_norm: with xhat = xc*r over ``axes``,
# dx = r*(dxhat - mean(dxhat) - xhat*mean(dxhat*xhat)) where dxhat = dy*gamma.

def _along(ctx, v: str, x: str, ax: int) -> str:
    """A per-channel vector shaped to broadcast along axis ``ax`` of ``x``."""
    trailing = ctx.rank(x) - 1 - ax
    return v if trailing == 0 else ctx.reshape(v, shape=(ctx.shape(v)[0],) + (1,) * trailing)


def _batch_norm_vjp(ctx, dy):
    x, gamma, beta, mean, var = ctx.x
    rank = ctx.rank(x)
    ax = ctx.attrs["axis"] % rank
    others = tuple(i for i in range(rank) if i != ax)
    r = ctx.reciprocal(ctx.sqrt(ctx.add(var, ctx.scalar(ctx.attrs["epsilon"], ctx.dtype(x)))))
    scale = ctx.mul(gamma, r)
    dx = ctx.mul(dy, _along(ctx, scale, x, ax)) if ctx.needs[0] else None
    dbeta = ctx.reduce_sum(dy, axes=others) if (ctx.needs[2] or ctx.needs[3]) else None
    t = None
    if ctx.needs[1] or ctx.needs[4]:
        xc = ctx.sub(x, _along(ctx, mean, x, ax))
        t = ctx.reduce_sum(ctx.mul(dy, xc), axes=others)
    dgamma = ctx.mul(t, r) if ctx.needs[1] else None
    dmean = ctx.neg(ctx.mul(dbeta, scale)) if ctx.needs[3] else None
    dvar = None
    if ctx.needs[4]:
        r3 = ctx.mul(r, ctx.mul(r, r))
        dvar = ctx.mul(ctx.mul(t, ctx.mul(gamma, r3)), ctx.scalar(-0.5, ctx.dtype(x)))
    return [dx, dgamma, dbeta if ctx.needs[2] else None, dmean, dvar]


def _layer_norm_vjp(ctx, dy):
    x, gamma, beta = ctx.x
    rank = ctx.rank(x)
    axes = _layer_norm_axes(ctx.attrs["axes"], rank)
    others = tuple(i for i in range(rank) if i not in axes)
    pshape = tuple(d if i in axes else 1 for i, d in enumerate(ctx.shape(x)))
    mean = ctx.reduce_mean(x, axes=axes, keepdims=True)
    xc = ctx.sub(x, mean)
    var = ctx.reduce_mean(ctx.square(xc), axes=axes, keepdims=True)
    r = ctx.reciprocal(ctx.sqrt(ctx.add(var, ctx.scalar(ctx.attrs["epsilon"], ctx.dtype(x)))))
    xhat = ctx.mul(xc, r)
    dx = dgamma = dbeta = None
    if ctx.needs[0]:
        dxhat = ctx.mul(dy, ctx.reshape(gamma, shape=pshape))
        m1 = ctx.reduce_mean(dxhat, axes=axes, keepdims=True)
        m2 = ctx.reduce_mean(ctx.mul(dxhat, xhat), axes=axes, keepdims=True)
        dx = ctx.mul(r, ctx.sub(ctx.sub(dxhat, m1), ctx.mul(xhat, m2)))
    if ctx.needs[1]:
        dgamma = ctx.reduce_sum(ctx.mul(dy, xhat), axes=others) if others else ctx.mul(dy, xhat)
    if ctx.needs[2]:
        dbeta = ctx.reduce_sum(dy, axes=others) if others else dy
    return [dx, dgamma, dbeta]


get("batch_norm").vjp = _batch_norm_vjp
get("layer_norm").vjp = _layer_norm_vjp


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm).
# (An inference batch_norm after a convolution is usually folded into it by the optimizer.)

def _batch_norm_lower(kb, op, x, gamma, beta, mean, variance, *, out, axis, epsilon):
    from graphc.ops.linalg import along_axis

    params = [along_axis(kb, p, axis, x.rank) for p in (gamma, beta, mean, variance)]

    def fn(m, v, g, b, mu, var):
        return m.fma(m.sub(v, mu), m.div(g, m.sqrt(m.add(var, epsilon))), b)

    kb.map(out, [x, *params], fn, name="batch_norm", cost=8)


def _layer_norm_lower(kb, op, x, gamma, beta, *, out, axes, epsilon):
    from graphc.backends.llvm.kernels import layer_norm

    axs = _layer_norm_axes(axes, x.rank)
    if layer_norm.applies(x, axs):
        layer_norm.emit_layer_norm_rows(kb, out, x, gamma, beta, axs, epsilon)
        return
    keep = tuple(1 if i in axs else d for i, d in enumerate(x.shape))
    mean = kb.temp(keep)
    kb.reduce(mean, x, axs, "mean")
    centered = kb.temp(x.shape)
    kb.map(centered, [x, mean], lambda m, v, mu: m.sub(v, mu), name="layer_norm_center")
    var = kb.temp(keep)
    kb.reduce(var, centered, axs, "meansq")
    pshape = _param_shape(x.shape, axs)
    g, b = kb.view(gamma, pshape), kb.view(beta, pshape)
    kb.map(out, [centered, var, g, b], lambda m, c, s, gg, bb: m.fma(m.div(c, m.sqrt(m.add(s, epsilon))), gg, bb),
           name="layer_norm", cost=8)


get("batch_norm").lower = _batch_norm_lower
get("layer_norm").lower = _layer_norm_lower
