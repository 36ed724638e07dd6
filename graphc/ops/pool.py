"""Pooling: ``max_pool`` and ``avg_pool`` over the spatial axes of channels-last tensors.

``x`` is (N, *spatial, C); attributes are the window ``kernel``, ``strides`` and explicit
``pads`` ((before, after) per spatial axis, possibly asymmetric or symbolic, see
:mod:`graphc.ops.conv`). ``max_pool`` treats padding as -inf; ``avg_pool`` leaves padding
out of the count, so a window divides by the number of real elements it covers (Keras's
'same' semantics on TensorFlow and JAX, ONNX ``count_include_pad=0``). Each padding pair
must be smaller than the window so that no window lies entirely in the padding.

Global pooling is a reduction (``reduce_max``/``reduce_mean``) and needs no op here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphc.ir.types import TensorType, is_float
from graphc.ops.common import fmt_shape, require_float
from graphc.ops.conv import (
    concrete_out,
    pad_array,
    pads_attr,
    per_axis,
    resolve_pads,
    tap_views,
    window_output_dims,
)
from graphc.ops.registry import REQUIRED, OpDef, ShapeError, get, register


def pool_geometry(rank: int, kernel, strides, pads, what: str):
    nsp = rank - 2
    if kernel is None:
        raise ShapeError(f"{what}: kernel must be {nsp} positive integer(s), got None")
    kernel = per_axis(kernel, nsp, "kernel", what)
    strides = per_axis(strides, nsp, "strides", what)
    pads = pads_attr(pads, nsp, what)
    for axis, (k, pair) in enumerate(zip(kernel, pads)):
        for p in pair:
            if isinstance(p, int) and p >= k:
                raise ShapeError(f"{what}: padding {pair} on spatial axis {axis} must be smaller than "
                                 f"the window {k}")
    return kernel, strides, pads


def _pool_infer(what: str):
    def infer(types: list[TensorType], *, kernel, strides, pads) -> TensorType:
        x = types[0]
        if what == "avg_pool":
            require_float(x, "avg_pool input")
        elif not (is_float(x.dtype) or x.dtype.startswith(("int", "uint"))):
            raise ShapeError(f"max_pool needs a numeric input, got {x.dtype}")
        if x.rank < 3:
            raise ShapeError(f"{what} needs an input of rank >= 3 (batch, *spatial, channels), got "
                             f"shape {fmt_shape(x.shape)}")
        k, s, p = pool_geometry(x.rank, kernel, strides, pads, what)
        out = window_output_dims(x.shape[1:-1], k, s, (1,) * len(k), p, what)
        return TensorType(x.dtype, (x.shape[0],) + out + (x.shape[-1],))

    return infer


def _prepare(x: np.ndarray, kernel, strides, pads, bindings, what: str):
    k, s, p = pool_geometry(x.ndim, kernel, strides, pads, what)
    p_i = resolve_pads(p, bindings, what)
    for axis, (kk, pair) in enumerate(zip(k, p_i)):
        if max(pair) >= kk:
            raise ValueError(f"{what}: padding {pair} on spatial axis {axis} must be smaller than the "
                             f"window {kk}")
    ones = (1,) * len(k)
    return k, s, p_i, ones, concrete_out(x.shape, k, s, ones, p_i, what)


def _max_pool(x: np.ndarray, *, kernel, strides, pads, bindings: Mapping[str, int] | None = None):
    k, s, p, ones, out = _prepare(x, kernel, strides, pads, bindings, "max_pool")
    fill = -np.inf if is_float(x.dtype.name) else np.iinfo(x.dtype).min
    xp = pad_array(x, p, fill)
    acc: np.ndarray | None = None
    for _, v in tap_views(xp, k, s, ones, out):
        acc = v.copy() if acc is None else np.maximum(acc, v, out=acc)
    return acc


def _window_counts(n: int, k: int, s: int, pad_before: int, out: int) -> np.ndarray:
    """How many real (unpadded) elements each output position's window covers along one axis."""
    starts = np.arange(out) * s - pad_before
    return np.clip(starts + k, 0, n) - np.clip(starts, 0, n)


def _avg_pool(x: np.ndarray, *, kernel, strides, pads, bindings: Mapping[str, int] | None = None):
    k, s, p, ones, out = _prepare(x, kernel, strides, pads, bindings, "avg_pool")
    xp = pad_array(x, p, 0)
    acc: np.ndarray | None = None
    for _, v in tap_views(xp, k, s, ones, out):
        acc = v.copy() if acc is None else np.add(acc, v, out=acc)
    count = np.ones((1,) * x.ndim, dtype=x.dtype)
    for axis, (n, kk, ss, (pb, _), o) in enumerate(zip(x.shape[1:-1], k, s, p, out)):
        shape = [1] * x.ndim
        shape[axis + 1] = o
        count = count * _window_counts(n, kk, ss, pb, o).astype(x.dtype).reshape(shape)
    return (acc / count).astype(x.dtype, copy=False)


_ATTRS = {"kernel": REQUIRED, "strides": None, "pads": None}
_DOC = ("over the spatial axes of x (N, *spatial, C): kernel and strides one int per spatial axis "
        "(strides None = ones), pads (before, after) per axis (None = none)")

register(OpDef("max_pool", _pool_infer("max_pool"), _max_pool, attrs=dict(_ATTRS), num_inputs=1,
               fusion_kind="opaque", uses_dims=True,
               doc="Window maximum " + _DOC + "; padding counts as -inf."))
register(OpDef("avg_pool", _pool_infer("avg_pool"), _avg_pool, attrs=dict(_ATTRS), num_inputs=1,
               fusion_kind="opaque", uses_dims=True,
               doc="Window mean " + _DOC + "; padding is left out of the count."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext): NHWC -> NCHW, ONNX
# MaxPool/AveragePool (count_include_pad=0: padding is left out of the mean), -> NHWC.

def _pool_to_onnx(onnx_type: str):
    def to_onnx(ctx, op):
        from graphc.ops.conv import onnx_channels_first, onnx_channels_last, onnx_window

        x = ctx.input_type(0)
        a = ctx.attrs
        k, s, p = pool_geometry(x.rank, a["kernel"], a["strides"], a["pads"], op.type)
        ones = (1,) * len(k)
        fill = -np.inf if onnx_type == "MaxPool" else None
        xn = onnx_channels_first(ctx, ctx.input_name(0), x.rank)
        symbolic = not all(isinstance(v, int) for pair in p for v in pair)
        if onnx_type == "AveragePool" and symbolic and any(st > kk for kk, st in zip(k, s)):
            # Explicit pads (see onnx_window) are counted by AveragePool: the mean of the real
            # elements is the zero-padded window's sum over the padded window's count of ones.
            pad_shape = ctx.shape([0, 0, *[b for b, _ in p], 0, 0, *[a for _, a in p]])
            zero = ctx.scalar(0.0, x.dtype)
            unit = ctx.filled(ctx.shape_of(xn), 1.0, x.dtype)
            sums, counts = (ctx.node("AveragePool", [ctx.node("Pad", [v, pad_shape, zero], mode="constant")],
                                     kernel_shape=list(k), strides=list(s), count_include_pad=1)
                            for v in (xn, unit))
            y = ctx.node("Div", [sums, counts])
        else:
            xc, pad_attrs = onnx_window(ctx, xn, x.shape[1:-1], k, s, ones, p, fill)
            extra = {"count_include_pad": 0} if onnx_type == "AveragePool" else {}
            y = ctx.node(onnx_type, [xc], kernel_shape=list(k), strides=list(s), **pad_attrs, **extra)
        onnx_channels_last(ctx, y, x.rank, ctx.output_name(0))

    return to_onnx


get("max_pool").to_onnx = _pool_to_onnx("MaxPool")
get("avg_pool").to_onnx = _pool_to_onnx("AveragePool")


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext) and the pooling
# ops' backward ops, with the forward's attributes: ``max_pool_grad(x, dy)`` routes each
# window's cotangent to its maximum (the first one in window order, as PyTorch does);
# ``avg_pool_grad(x, dy)`` spreads it evenly over the real elements of the window (x gives the
# shape only).

def _pool_grad_infer(what: str):
    forward = _pool_infer(what)

    def infer(types, *, kernel, strides, pads):
        x, dy = types
        y = forward([x], kernel=kernel, strides=strides, pads=pads)
        if dy.dtype != y.dtype or dy.rank != y.rank:
            raise ShapeError(f"{what}_grad: cotangent {dy} does not match the pooling output {y}")
        return x

    return infer


def _crop(xp: np.ndarray, x_shape, pads) -> np.ndarray:
    inner = (slice(None),) + tuple(slice(pb, pb + n) for n, (pb, _) in zip(x_shape[1:-1], pads))
    return np.ascontiguousarray(xp[inner])


def _tap_slices(tap, strides, out):
    return (slice(None),) + tuple(slice(t, t + (o - 1) * s + 1, s) for t, s, o in zip(tap, strides, out))


def _max_pool_grad(x, dy, *, kernel, strides, pads, bindings: Mapping[str, int] | None = None):
    k, s, p, ones, out = _prepare(x, kernel, strides, pads, bindings, "max_pool")
    fill = -np.inf if is_float(x.dtype.name) else np.iinfo(x.dtype).min
    xp = pad_array(x, p, fill)
    y = _max_pool(x, kernel=kernel, strides=strides, pads=pads, bindings=bindings)
    dxp = np.zeros(xp.shape, dtype=dy.dtype)
    taken = np.zeros(y.shape, dtype=bool)
    for tap, v in tap_views(xp, k, s, ones, out):
        first = (v == y) & ~taken
        taken |= first
        dxp[_tap_slices(tap, s, out)] += np.where(first, dy, 0)
    return _crop(dxp, x.shape, p)


def _avg_pool_grad(x, dy, *, kernel, strides, pads, bindings: Mapping[str, int] | None = None):
    k, s, p, ones, out = _prepare(x, kernel, strides, pads, bindings, "avg_pool")
    count = np.ones((1,) * x.ndim, dtype=dy.dtype)
    for axis, (n, kk, ss, (pb, _), o) in enumerate(zip(x.shape[1:-1], k, s, p, out)):
        shape = [1] * x.ndim
        shape[axis + 1] = o
        count = count * _window_counts(n, kk, ss, pb, o).astype(dy.dtype).reshape(shape)
    g = dy / count
    padded = (x.shape[0],) + tuple(n + pb + pa for n, (pb, pa) in zip(x.shape[1:-1], p)) + (x.shape[-1],)
    dxp = np.zeros(padded, dtype=dy.dtype)
    for tap in np.ndindex(*k):
        dxp[_tap_slices(tap, s, out)] += g
    return _crop(dxp, x.shape, p)


register(OpDef("max_pool_grad", _pool_grad_infer("max_pool"), _max_pool_grad, attrs=dict(_ATTRS), num_inputs=2,
               fusion_kind="opaque", uses_dims=True, not_differentiable=True, training_only=True,
               doc="(x, dy) -> dx, the gradient of `max_pool` (same attributes): each window's cotangent "
                   "goes to its first maximum."))
register(OpDef("avg_pool_grad", _pool_grad_infer("avg_pool"), _avg_pool_grad, attrs=dict(_ATTRS), num_inputs=2,
               fusion_kind="opaque", uses_dims=True, not_differentiable=True, training_only=True,
               doc="(x, dy) -> dx, the gradient of `avg_pool` (same attributes); x only gives the shape."))

get("max_pool").vjp = lambda ctx, dy: [ctx.max_pool_grad(ctx.x[0], dy, **ctx.attrs)]
get("avg_pool").vjp = lambda ctx, dy: [ctx.avg_pool_grad(ctx.x[0], dy, **ctx.attrs)]


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm).

def _pool_lower(kind: str):
    def lower(kb, op, x, *, out, kernel, strides, pads):
        k, s, p = pool_geometry(x.rank, kernel, strides, pads, op.type)
        kb.pool(x, out, kind=kind, kernel=k, strides=s, pads=p)

    return lower


get("max_pool").lower = _pool_lower("max")
get("avg_pool").lower = _pool_lower("avg")


# ---------------------------------------------------------------------------- native: gradients

def _pool_grad_lower(kind: str):
    def lower(kb, op, x, dy, *, out, kernel, strides, pads):
        k, s, p = pool_geometry(x.rank, kernel, strides, pads, op.type)
        kb.pool_grad(x, dy, out, kind=kind, kernel=k, strides=s, pads=p)

    return lower


get("max_pool_grad").lower = _pool_grad_lower("max")
get("avg_pool_grad").lower = _pool_grad_lower("avg")


# ---------------------------------------------------------------------------- ONNX: gradients
# ``to_onnx`` facets of the pooling gradients (training-step exports), both the adjoint of a
# window sum (a depthwise ConvTranspose, :func:`graphc.ops.conv.onnx_window_adjoint`):
#   avg_pool_grad: dy divided by each window's count of real elements (a Conv of ones over the
#       zero-padded input's shape), spread over the window by a ConvTranspose of ones;
#   max_pool_grad: for each kernel tap in window order, where the tap's strided view of the
#       -inf padded input equals the window maximum and no earlier tap did, dy goes to that tap
#       (the first maximum, as the reference); the K taps' shares stacked as channels
#       (c*K + tap) go back to their positions through a ConvTranspose with one-hot kernels.
# No Indices output of MaxPool is used: ONNX does not say which of equal maxima it points to.

def _onnx_pool_grad_geometry(ctx, op):
    x = ctx.input_type(0)
    if not is_float(x.dtype):
        raise ctx.error(f"{op.type} of a {x.dtype} input has no gradient")
    channels = x.shape[-1]
    if not isinstance(channels, int):
        raise ctx.error(f"{op.type} over a free number of channels ({channels}) cannot be exported: the "
                        "depthwise ONNX ConvTranspose needs a fixed channel count")
    k, s, p = pool_geometry(x.rank, ctx.attrs["kernel"], ctx.attrs["strides"], ctx.attrs["pads"], op.type)
    return x, channels, k, s, p


def _onnx_padded(ctx, x_nchw: str, pads, value: float) -> str:
    widen = ctx.shape([0, 0, *[b for b, _ in pads], 0, 0, *[a for _, a in pads]])
    return ctx.node("Pad", [x_nchw, widen, ctx.scalar(value, ctx.input_type(0).dtype)], mode="constant")


def _avg_pool_grad_to_onnx(ctx, op):
    from graphc.ops.conv import onnx_channels_first, onnx_window_adjoint

    x, channels, k, s, p = _onnx_pool_grad_geometry(ctx, op)
    dtype = x.dtype
    ones = ctx.filled(ctx.shape([1, 1, *x.shape[1:-1]]), 1.0, dtype)
    window = ctx.constant(np.ones((1, 1, *k), dtype=dtype), "window")
    counts = ctx.node("Conv", [_onnx_padded(ctx, ones, p, 0.0), window], kernel_shape=list(k), strides=list(s))
    share = ctx.node("Div", [onnx_channels_first(ctx, ctx.input_name(1), x.rank), counts])
    spread = ctx.constant(np.ones((channels, 1, *k), dtype=dtype), "spread")
    onnx_window_adjoint(ctx, share, spread, k, s, (1,) * len(k), p, channels, x.shape, ctx.output_name(0))


def _max_pool_grad_to_onnx(ctx, op):
    from graphc.ir import dims
    from graphc.ops.conv import onnx_channels_first, onnx_window_adjoint

    x, channels, k, s, p = _onnx_pool_grad_geometry(ctx, op)
    rank, dtype = x.rank, x.dtype
    out = ctx.input_type(1).shape[1:-1]
    xp = _onnx_padded(ctx, onnx_channels_first(ctx, ctx.input_name(0), rank), p, -np.inf)
    peak = ctx.node("MaxPool", [xp], kernel_shape=list(k), strides=list(s))
    dy = onnx_channels_first(ctx, ctx.input_name(1), rank)
    zero = ctx.scalar(0.0, dtype)
    taken, shares = None, []
    for tap in np.ndindex(*k):
        ends = [dims.add(dims.mul(dims.sub(o, 1), st), t + 1) for t, st, o in zip(tap, s, out)]
        view = ctx.node("Slice", [xp, ctx.ints(tap), ctx.shape(ends), ctx.ints(range(2, rank)), ctx.ints(s)])
        hit = ctx.node("Equal", [view, peak])
        first = hit if taken is None else ctx.node("And", [hit, ctx.node("Not", [taken])])
        taken = hit if taken is None else ctx.node("Or", [taken, hit])
        shares.append(ctx.unsqueeze(ctx.node("Where", [first, dy, zero]), [2]))
    taps = len(shares)
    stacked = ctx.node("Concat", shares, axis=2) if taps > 1 else shares[0]
    stacked = ctx.node("Reshape", [stacked, ctx.shape([x.shape[0], channels * taps, *out])])
    one_hot = np.tile(np.eye(taps, dtype=dtype).reshape(taps, 1, *k), (channels,) + (1,) * (len(k) + 1))
    onnx_window_adjoint(ctx, stacked, ctx.constant(one_hot, "taps"), k, s, (1,) * len(k), p, channels, x.shape,
                        ctx.output_name(0))


get("max_pool_grad").to_onnx = _max_pool_grad_to_onnx
get("avg_pool_grad").to_onnx = _avg_pool_grad_to_onnx
