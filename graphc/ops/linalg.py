"""Matrix products: ``matmul`` (with broadcasting batch dims) and ``bias_add``."""

from __future__ import annotations

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import broadcast_shapes, fmt_shape, norm_axis, require_float, same_dtype
from graphc.ops.registry import OpDef, ShapeError, get, register


def _matmul_infer(types, **_):
    a, b = types
    require_float(a, "matmul input")
    same_dtype(types, "matmul operands")
    if a.rank < 1 or b.rank < 2:
        raise ShapeError(f"matmul needs operands of rank >= 1 and >= 2, got {fmt_shape(a.shape)} "
                         f"and {fmt_shape(b.shape)}")
    k_a, k_b = a.shape[-1], b.shape[-2]
    if not dims.compatible(k_a, k_b):
        raise ShapeError(f"matmul contraction mismatch: {fmt_shape(a.shape)} @ {fmt_shape(b.shape)} "
                         f"({k_a} != {k_b})")
    if b.rank == 2:
        return TensorType(a.dtype, a.shape[:-1] + (b.shape[-1],))
    if a.rank < 2:
        raise ShapeError(f"batched matmul needs rank >= 2 operands, got {fmt_shape(a.shape)}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(a.dtype, batch + (a.shape[-2], b.shape[-1]))


def _matmul(a, b):
    return np.matmul(a, b)


register(OpDef("matmul", _matmul_infer, _matmul, num_inputs=2, fusion_kind="opaque",
               doc="a @ b: contracts a's last axis with b's second-to-last (b 2-D: a weight matrix)."))


def _bias_add_infer(types, *, axis):
    x, b = types
    same_dtype(types, "bias_add operands")
    ax = norm_axis(axis, x.rank)
    if b.rank != 1 or not dims.compatible(b.shape[0], x.shape[ax]):
        raise ShapeError(f"bias of shape {fmt_shape(b.shape)} does not match axis {axis} of "
                         f"{fmt_shape(x.shape)}")
    return x


def _bias_add(x, b, *, axis):
    ax = axis % x.ndim
    shape = [1] * x.ndim
    shape[ax] = b.shape[0]
    return x + b.reshape(shape)


register(OpDef("bias_add", _bias_add_infer, _bias_add, attrs={"axis": -1}, num_inputs=2,
               fusion_kind="broadcast", doc="x + b along one axis (default: the last)."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext).

def _matmul_to_onnx(ctx, op):
    ctx.node("MatMul", [ctx.input_name(0), ctx.input_name(1)], ctx.output_name(0))


def _bias_add_to_onnx(ctx, op):
    x, b = ctx.input_name(0), ctx.input_name(1)
    rank = ctx.input_type(0).rank
    trailing = rank - 1 - ctx.attrs["axis"] % rank  # axes after the bias axis
    if trailing:
        b = ctx.derived(1, lambda v: v.reshape((-1,) + (1,) * trailing), f"axis{ctx.attrs['axis'] % rank}") \
            or ctx.unsqueeze(b, list(range(1, trailing + 1)))
    ctx.node("Add", [x, b], ctx.output_name(0))


get("matmul").to_onnx = _matmul_to_onnx
get("bias_add").to_onnx = _bias_add_to_onnx


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm).

def along_axis(kb, v, axis: int, rank: int):
    """A vector ``v`` viewed with unit axes around ``axis`` so that it broadcasts along it."""
    shape = [1] * rank
    shape[axis % rank] = v.shape[0]
    return kb.view(v, shape)


def _matmul_lower(kb, op, a, b, *, out):
    kb.matmul(a, b, out)


def _bias_add_lower(kb, op, x, b, *, out, axis):
    kb.map(out, [x, along_axis(kb, b, axis, x.rank)], lambda m, u, v: m.add(u, v), name="bias_add")


get("matmul").lower = _matmul_lower
get("bias_add").lower = _bias_add_lower


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext).

def _swap_last(ctx, v: str) -> str:
    rank = ctx.rank(v)
    return ctx.transpose(v, perm=tuple(range(rank - 2)) + (rank - 1, rank - 2))


def _matmul_vjp(ctx, dy):
    a, b = ctx.x
    da = db = None
    if ctx.type(b).rank == 2:
        if ctx.needs[0]:
            if ctx.rank(a) == 1:  # (K,) @ (K, N): da = b @ dy
                da = ctx.matmul(dy, _swap_last(ctx, b))
            else:
                da = ctx.matmul(dy, _swap_last(ctx, b))
        if ctx.needs[1]:
            k, n = ctx.shape(b)
            if ctx.rank(a) == 1:
                db = ctx.mul(ctx.expand_dims(a, axis=1), ctx.expand_dims(dy, axis=0))
            else:
                a2 = ctx.reshape(a, shape=(-1, k)) if ctx.rank(a) > 2 else a
                d2 = ctx.reshape(dy, shape=(-1, n)) if ctx.rank(dy) > 2 else dy
                db = ctx.matmul(_swap_last(ctx, a2), d2)
        return [da, db]
    if ctx.needs[0]:
        da = ctx.unbroadcast(ctx.matmul(dy, _swap_last(ctx, b)), a)
    if ctx.needs[1]:
        db = ctx.unbroadcast(ctx.matmul(_swap_last(ctx, a), dy), b)
    return [da, db]


def _bias_add_vjp(ctx, dy):
    x, b = ctx.x
    rank = ctx.rank(x)
    ax = ctx.attrs["axis"] % rank
    db = None
    if ctx.needs[1]:  # a free bias dim may be 1 at run time, broadcast along the channels
        db = ctx.unbroadcast(ctx.reduce_sum(dy, axes=tuple(i for i in range(rank) if i != ax), keepdims=False), b)
    return [dy, db]


get("matmul").vjp = _matmul_vjp
get("bias_add").vjp = _bias_add_vjp
