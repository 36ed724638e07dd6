"""Reductions over axes, ``sum_to`` (broadcasting's adjoint), softmax and L2 normalization."""

from __future__ import annotations

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape, norm_axis, require_float
from graphc.ops.registry import REQUIRED, OpDef, ShapeError, get, register


def _reduce_infer(types, *, axes, keepdims):
    x = types[0]
    axs = sorted({norm_axis(a, x.rank) for a in axes})
    if keepdims:
        shape = tuple(1 if i in axs else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axs)
    return TensorType(x.dtype, shape)


def _register_reduce(name: str, fn, accumulate: bool = False) -> None:
    def reference(x, *, axes, keepdims):
        # The oracle accumulates sums of float32 in float64: a float32 sum over N*H*W (BatchNorm's
        # batch moments in training) drifts further from the exact value than the backends may.
        extra = {"dtype": np.float64} if accumulate and x.dtype.kind == "f" and x.dtype.itemsize < 8 else {}
        return np.asarray(fn(x, axis=tuple(axes), keepdims=keepdims, **extra), dtype=x.dtype)

    register(OpDef(name, _reduce_infer, reference, attrs={"axes": REQUIRED, "keepdims": False},
                   num_inputs=1, fusion_kind="reduction", doc=f"{name} over the given axes."))


for _name, _fn in {"reduce_sum": np.sum, "reduce_mean": np.mean}.items():
    _register_reduce(_name, _fn, accumulate=True)
for _name, _fn in {"reduce_max": np.max, "reduce_min": np.min}.items():
    _register_reduce(_name, _fn)


def _sum_to_infer(types):
    x, like = types
    require_float(x)
    lead = x.rank - like.rank
    if lead < 0 or any(t != 1 and not dims.compatible(d, t) for d, t in zip(x.shape[lead:], like.shape)):
        raise ShapeError(f"sum_to: {fmt_shape(like.shape)} does not broadcast to {fmt_shape(x.shape)}, "
                         "so a tensor of that shape cannot be summed to it")
    return TensorType(x.dtype, like.shape)


def _sum_to(x, like):
    lead = x.ndim - like.ndim
    s = np.sum(x, axis=tuple(range(lead))) if lead > 0 else x
    axes = tuple(i for i, (d, t) in enumerate(zip(s.shape, like.shape)) if t == 1 and d != 1)
    if axes:
        s = np.sum(s, axis=axes, keepdims=True)
    if lead < 0 or s.shape != like.shape:
        raise ShapeError(f"cannot sum an array of shape {x.shape} to shape {like.shape}: "
                         "the target does not broadcast to it")
    return np.asarray(s, dtype=x.dtype)


register(OpDef("sum_to", _sum_to_infer, _sum_to, num_inputs=2, fusion_kind="reduction", training_only=True,
               doc="x summed to the shape of `like` (whose values are not read): over its leading axes and "
                   "where `like` has 1, the adjoint of broadcasting. A free dim of `like` is summed over "
                   "exactly when it is 1 at run time (gradients of operands broadcast along free dims)."))


def _float_same(types, **_):
    require_float(types[0])
    norm_axis(_.get("axis", -1), types[0].rank)
    return types[0]


def _softmax(x, *, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype, copy=False)


register(OpDef("softmax", _float_same, _softmax, attrs={"axis": -1}, num_inputs=1,
               fusion_kind="reduction", doc="exp(x) / sum(exp(x)) along one axis."))


def _log_softmax(x, *, axis):
    m = np.max(x, axis=axis, keepdims=True)
    s = x - m
    return (s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))).astype(x.dtype, copy=False)


register(OpDef("log_softmax", _float_same, _log_softmax, attrs={"axis": -1}, num_inputs=1,
               fusion_kind="reduction", doc="x - logsumexp(x) along one axis."))


def _l2_normalize(x, *, axis, epsilon):
    sq = np.sum(np.square(x), axis=axis, keepdims=True)
    return (x / np.sqrt(np.maximum(sq, epsilon))).astype(x.dtype, copy=False)


def _l2_infer(types, *, axis, epsilon):
    require_float(types[0])
    norm_axis(axis, types[0].rank)
    return types[0]


register(OpDef("l2_normalize", _l2_infer, _l2_normalize, attrs={"axis": -1, "epsilon": 1e-12},
               num_inputs=1, fusion_kind="reduction",
               doc="x / sqrt(max(sum(x^2), epsilon)) along one axis (Keras's l2_normalize)."))


def _argmax_infer(types, *, axis):
    x = types[0]
    ax = norm_axis(axis, x.rank)
    return TensorType("int64", x.shape[:ax] + x.shape[ax + 1:])


register(OpDef("argmax", _argmax_infer, lambda x, *, axis: np.argmax(x, axis=axis).astype(np.int64),
               attrs={"axis": -1}, num_inputs=1, fusion_kind="reduction", not_differentiable=True,
               doc="Index of the largest value along one axis."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext).

def _reduce_to_onnx(onnx_type: str):
    def to_onnx(ctx, op):
        rank = ctx.input_type(0).rank
        axes = sorted({a % rank for a in ctx.attrs["axes"]})
        if not axes:  # NumPy reduces nothing; ONNX would reduce everything
            ctx.node("Identity", [ctx.input_name(0)], ctx.output_name(0))
            return
        ctx.reduce(onnx_type, ctx.input_name(0), axes, ctx.attrs["keepdims"], ctx.output_name(0))

    return to_onnx


def _softmax_to_onnx(onnx_type: str):
    def to_onnx(ctx, op):
        rank = ctx.input_type(0).rank
        axis = ctx.attrs["axis"] % rank
        if axis != rank - 1:  # before opset 13, Softmax flattened every axis from `axis` on
            ctx.require_opset(13, f"{onnx_type} over axis {ctx.attrs['axis']}, not the last one")
        ctx.node(onnx_type, [ctx.input_name(0)], ctx.output_name(0), axis=axis)

    return to_onnx


def _l2_normalize_to_onnx(ctx, op):
    x = ctx.input_name(0)
    axis = ctx.attrs["axis"] % ctx.input_type(0).rank
    sq = ctx.reduce("ReduceSumSquare", x, [axis], True)
    floor = ctx.scalar(ctx.attrs["epsilon"], ctx.input_type(0).dtype)
    ctx.node("Div", [x, ctx.node("Sqrt", [ctx.node("Max", [sq, floor])])], ctx.output_name(0))


def _argmax_to_onnx(ctx, op):
    ctx.node("ArgMax", [ctx.input_name(0)], ctx.output_name(0), axis=ctx.attrs["axis"] % ctx.input_type(0).rank,
             keepdims=0)


def _sum_to_to_onnx(ctx, op):
    """ReduceSum over x's leading axes, then over the axes where ``like`` has 1. An axis where
    ``like`` has a free dim is summed exactly when that dim is 1 at run time: its index joins the
    axes tensor through Compress on ``Shape(like) == 1``, and ReduceSum (opset 13, axes as an
    input, ``noop_with_empty_axes``) sums over whatever was picked."""
    x, like = ctx.input_type(0), ctx.input_type(1)
    lead = x.rank - like.rank
    value = ctx.input_name(0)
    if lead:
        value = ctx.reduce("ReduceSum", value, list(range(lead)), False)
    pairs = list(zip(x.shape[lead:], like.shape))
    fixed = [i for i, (d, t) in enumerate(pairs) if t == 1 and d != 1]
    free = [i for i, (d, t) in enumerate(pairs) if isinstance(t, str) and d != 1]
    if not free:
        if fixed:
            ctx.reduce("ReduceSum", value, fixed, True, ctx.output_name(0))
        else:
            ctx.node("Identity", [value], ctx.output_name(0))
        return
    ctx.require_opset(13, "sum_to over a free dimension, whose axes are chosen at run time")
    candidates = ctx.ints(free)
    sizes = ctx.node("Gather", [ctx.shape_of(ctx.input_name(1)), candidates], axis=0)
    picked = ctx.node("Compress", [candidates, ctx.node("Equal", [sizes, ctx.ints([1])])], axis=0)
    axes = ctx.node("Concat", [ctx.ints(fixed), picked], axis=0) if fixed else picked
    ctx.node("ReduceSum", [value, axes], ctx.output_name(0), keepdims=1, noop_with_empty_axes=1)


for _name, _onnx_type in {"reduce_sum": "ReduceSum", "reduce_mean": "ReduceMean", "reduce_max": "ReduceMax",
                          "reduce_min": "ReduceMin"}.items():
    get(_name).to_onnx = _reduce_to_onnx(_onnx_type)
get("softmax").to_onnx = _softmax_to_onnx("Softmax")
get("log_softmax").to_onnx = _softmax_to_onnx("LogSoftmax")
get("l2_normalize").to_onnx = _l2_normalize_to_onnx
get("argmax").to_onnx = _argmax_to_onnx
get("sum_to").to_onnx = _sum_to_to_onnx


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm).

def _reduce_lower(kind: str):
    def lower(kb, op, x, *, out, axes, keepdims):
        kb.reduce(out, x, axes, kind)

    return lower


def _softmax_lower(log: bool):
    def lower(kb, op, x, *, out, axis):
        kb.softmax(out, x, axis, log=log)

    return lower


def _l2_normalize_lower(kb, op, x, *, out, axis, epsilon):
    ax = axis % x.rank
    keep = tuple(1 if i == ax else d for i, d in enumerate(x.shape))
    sq = kb.temp(keep, x.dtype)
    kb.reduce(sq, x, (ax,), "sumsq")
    kb.map(out, [x, sq], lambda m, v, s: m.div(v, m.sqrt(m.maximum(s, epsilon))), name="l2_normalize")


def _argmax_lower(kb, op, x, *, out, axis):
    kb.argmax(out, x, axis)


def _sum_to_lower(kb, op, x, like, *, out):
    kb.sum_to(out, x)


for _name, _kind in (("reduce_sum", "sum"), ("reduce_mean", "mean"), ("reduce_max", "max"),
                     ("reduce_min", "min")):
    get(_name).lower = _reduce_lower(_kind)
get("softmax").lower = _softmax_lower(False)
get("log_softmax").lower = _softmax_lower(True)
get("l2_normalize").lower = _l2_normalize_lower
get("argmax").lower = _argmax_lower
get("sum_to").lower = _sum_to_lower


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext).

def _reduce_sum_vjp(ctx, dy):
    x = ctx.x[0]
    return [ctx.broadcast_to(ctx.expand_reduced(dy, x, ctx.attrs["axes"], ctx.attrs["keepdims"]), x)]


def _reduce_mean_vjp(ctx, dy):
    x = ctx.x[0]
    axes = ctx.attrs["axes"]
    g = ctx.div(ctx.expand_reduced(dy, x, axes, ctx.attrs["keepdims"]), ctx.count(x, axes))
    return [ctx.broadcast_to(g, x)]


def _reduce_extreme_vjp(ctx, dy):
    """The cotangent goes to the elements equal to the extreme, shared evenly between ties."""
    x = ctx.x[0]
    axes, keep = ctx.attrs["axes"], ctx.attrs["keepdims"]
    y = ctx.expand_reduced(ctx.y[0], x, axes, keep)
    hit = ctx.cast(ctx.equal(x, y), dtype=ctx.dtype(x))
    ties = ctx.reduce_sum(hit, axes=axes, keepdims=True)
    share = ctx.div(ctx.expand_reduced(dy, x, axes, keep), ties)
    return [ctx.mul(hit, share)]


def _sum_to_vjp(ctx, dy):
    return [ctx.broadcast_like(dy, ctx.x[0]), None]


def _softmax_vjp(ctx, dy):
    y = ctx.y[0]
    axis = ctx.attrs["axis"]
    inner = ctx.reduce_sum(ctx.mul(dy, y), axes=(axis,), keepdims=True)
    return [ctx.mul(y, ctx.sub(dy, inner))]


def _log_softmax_vjp(ctx, dy):
    axis = ctx.attrs["axis"]
    total = ctx.reduce_sum(dy, axes=(axis,), keepdims=True)
    return [ctx.sub(dy, ctx.mul(ctx.exp(ctx.y[0]), total))]


def _l2_normalize_vjp(ctx, dy):
    """y = x / n with n = sqrt(max(s, eps)), s = sum(x^2): dx = (dy - y * sum(dy * y) [if s > eps]) / n."""
    x, y = ctx.x[0], ctx.y[0]
    axis, eps = ctx.attrs["axis"], ctx.attrs["epsilon"]
    s = ctx.reduce_sum(ctx.square(x), axes=(axis,), keepdims=True)
    eps_c = ctx.scalar(eps, ctx.dtype(x))
    n = ctx.sqrt(ctx.maximum(s, eps_c))
    inner = ctx.reduce_sum(ctx.mul(dy, y), axes=(axis,), keepdims=True)
    on = ctx.cast(ctx.greater(s, eps_c), dtype=ctx.dtype(x))
    return [ctx.div(ctx.sub(dy, ctx.mul(y, ctx.mul(inner, on))), n)]


get("reduce_sum").vjp = _reduce_sum_vjp
get("reduce_mean").vjp = _reduce_mean_vjp
get("reduce_max").vjp = _reduce_extreme_vjp
get("reduce_min").vjp = _reduce_extreme_vjp
get("sum_to").vjp = _sum_to_vjp
get("softmax").vjp = _softmax_vjp
get("log_softmax").vjp = _log_softmax_vjp
get("l2_normalize").vjp = _l2_normalize_vjp
