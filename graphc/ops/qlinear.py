"""Integer products: ``qlinear_matmul`` and ``qlinear_conv`` (int8 in, int32 accumulation, int8 out).

What :mod:`graphc.passes.fold_qdq` turns a quantized product of the QDQ format into
(``dequantize -> matmul/conv (+ bias, relu) -> quantize``). Both take ONNX QLinearConv's operands
plus the bias::

    qlinear_matmul(x, x_scale, x_zero, w, w_scale, w_zero, bias, y_scale, y_zero; activation, max_value)
    qlinear_conv(x, x_scale, x_zero, w, w_scale, w_zero, bias, y_scale, y_zero; conv attrs, activation, max_value)

``x`` is uint8 or int8 (per-tensor scale and zero point), ``w`` int8 symmetric (zero points 0,
scale per tensor or per output channel), ``bias`` int32 with scale ``x_scale * w_scale`` (it is
added to the accumulator), ``y`` uint8 or int8 per tensor. The result is defined in integers and
float32, exactly as the native kernels compute it::

    acc  = sum_k (x - x_zero) * w + bias                      (exact integers)
    m    = float32(float32(x_scale * w_scale) / y_scale)     (per output channel)
    t    = float32(acc) * m                                   (float32)
    low  = qmin - y_zero, or max(that, 0) with activation "relu"
    high = qmax - y_zero, or min(that, rint(float32(max_value) / y_scale)) with a max_value
    y    = rint(clip(t, low, high)) + y_zero                  (round half to even)

A ReLU (with or without a ceiling) is thus a clamp in the quantized domain. Against the QDQ
graph it replaces, which sums float32 products, a result may differ by one quantization step
where ``t`` lies within float32 rounding of a half-integer; elsewhere they agree.

With ``has_residual`` three more operands follow, ``r, r_scale, r_zero`` (uint8/int8 of the output's
shape, per tensor), added after the activation as a fused convolution's residual is; the epilogue
is then the float one of the QDQ graph, on the exact accumulator (all in float32)::

    p = activation(float32(acc) * float32(x_scale * w_scale))      (relu: max(p, 0), min(p, max_value))
    y = post_activation(p + float32(r - r_zero) * r_scale)
    y = rint(clip(y / y_scale, qmin - y_zero, qmax - y_zero)) + y_zero

``requantize_linear(q, in_scale, in_zero, out_scale, out_zero)`` is ``quantize_linear(dequantize_linear(q,
in_scale, in_zero), out_scale, out_zero)`` in one pass (per tensor), bit for bit: what a quantized
tensor becomes between two differently calibrated quantizations (after a slice, say).

``qlinear_add(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero)`` is
``quantize_linear(dequantize_linear(a) + dequantize_linear(b), y_scale, y_zero)`` in one pass (per
tensor, operands of one shape), bit for bit: the residual add of two quantized branches, read and
written as bytes.

The ops sit wholly on the integer side, so they are not differentiable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape
from graphc.ops.quantize import _ROUNDER, QRANGE, QUANTIZED_DTYPES
from graphc.ops.registry import OpDef, ShapeError, get, register

ACTIVATIONS = ("linear", "relu")
_EPILOGUE = {"activation": "linear", "max_value": None, "has_residual": False, "post_activation": "linear",
             "post_max_value": None}
_CONV = {"strides": None, "dilations": None, "pads": None, "groups": 1}
# operand positions
X, X_SCALE, X_ZERO, W, W_SCALE, W_ZERO, BIAS, Y_SCALE, Y_ZERO, R, R_SCALE, R_ZERO = range(12)


def _check_activation(op: str, which: str, activation: str, max_value: Any, ceiling: str) -> None:
    if activation not in ACTIVATIONS:
        raise ShapeError(f"{op}: {which} must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if max_value is not None and (activation != "relu" or not float(max_value) > 0):
        raise ShapeError(f"{op}: {ceiling}={max_value!r} needs {which}='relu' and must be positive")


def _check_residual(types: list[TensorType], out: TensorType, op: str, attrs: dict) -> None:
    _check_activation(op, "post_activation", attrs["post_activation"], attrs["post_max_value"], "post_max_value")
    if not attrs["has_residual"]:
        if len(types) != 9:
            raise ShapeError(f"{op}: 9 operands without has_residual, got {len(types)}")
        if attrs["post_activation"] != "linear":
            raise ShapeError(f"{op}: post_activation needs has_residual")
        return
    if len(types) != 12:
        raise ShapeError(f"{op}: has_residual needs the residual, its scale and zero point (12 operands), got "
                         f"{len(types)}")
    r, rs, rz = types[R:]
    if r.dtype not in QUANTIZED_DTYPES or rz.dtype != r.dtype or rs.dtype != "float32" or rs.rank or rz.rank:
        raise ShapeError(f"{op}: the residual must be uint8/int8 with a float32 scale and a zero point of its "
                         f"dtype, both scalars; got {r.dtype}, {rs.dtype}{fmt_shape(rs.shape)}, "
                         f"{rz.dtype}{fmt_shape(rz.shape)}")
    if r.rank != out.rank or not all(dims.compatible(a, b) for a, b in zip(r.shape, out.shape)):
        raise ShapeError(f"{op}: the residual {fmt_shape(r.shape)} must have the output's shape {fmt_shape(out.shape)}")


def _check_operands(types: list[TensorType], op: str, activation: str, max_value: Any) -> int:
    """Checks the operands but the product's own shapes and the residual; returns the number of output channels."""
    x, xs, xz, w, ws, wz, bias, ys, yz = types[:9]
    if x.dtype not in QUANTIZED_DTYPES or xz.dtype != x.dtype:
        raise ShapeError(f"{op}: the input and its zero point must share one of {', '.join(QUANTIZED_DTYPES)}, "
                         f"got {x.dtype} and {xz.dtype}")
    if yz.dtype not in QUANTIZED_DTYPES:
        raise ShapeError(f"{op}: the output zero point must be one of {', '.join(QUANTIZED_DTYPES)}, got {yz.dtype}")
    for name, t in (("input scale", xs), ("input zero point", xz), ("output scale", ys), ("output zero point", yz)):
        if t.rank != 0:
            raise ShapeError(f"{op}: the {name} must be a scalar (per tensor), got shape {fmt_shape(t.shape)}")
    for name, t in (("input scale", xs), ("weight scale", ws), ("output scale", ys)):
        if t.dtype != "float32":
            raise ShapeError(f"{op}: the {name} must be float32, got {t.dtype}")
    if w.dtype != "int8" or wz.dtype != "int8":
        raise ShapeError(f"{op}: the weight and its zero point must be int8, got {w.dtype} and {wz.dtype}")
    n = w.shape[-1]
    if ws.shape != wz.shape or ws.rank > 1 or (ws.rank == 1 and ws.shape[0] != n):
        raise ShapeError(f"{op}: the weight scale and zero point must both be scalars or both ({n},) per output "
                         f"channel, got {fmt_shape(ws.shape)} and {fmt_shape(wz.shape)}")
    if bias.dtype != "int32" or bias.shape != (n,):
        raise ShapeError(f"{op}: the bias must be int32 of shape ({n},), got {bias.dtype}{fmt_shape(bias.shape)}")
    _check_activation(op, "activation", activation, max_value, "max_value")
    return n


def _matmul_infer(types, *, activation, max_value, **residual):
    n = _check_operands(types, "qlinear_matmul", activation, max_value)
    x, w = types[X], types[W]
    if w.rank != 2 or x.rank < 1 or not dims.compatible(x.shape[-1], w.shape[0]):
        raise ShapeError(f"qlinear_matmul: cannot multiply {fmt_shape(x.shape)} by a weight {fmt_shape(w.shape)}")
    out = TensorType(types[Y_ZERO].dtype, x.shape[:-1] + (n,))
    _check_residual(types, out, "qlinear_matmul", residual)
    return out


def _conv_infer(types, *, strides, dilations, pads, groups, activation, max_value, **residual):
    _check_operands(types, "qlinear_conv", activation, max_value)
    x, w = types[X], types[W]
    try:
        out = get("conv").infer([TensorType("float32", x.shape), TensorType("float32", w.shape)], strides=strides,
                                dilations=dilations, pads=pads, groups=groups)
    except ShapeError as exc:
        raise ShapeError(f"qlinear_conv: {exc}") from None
    out = TensorType(types[Y_ZERO].dtype, out.shape)
    _check_residual(types, out, "qlinear_conv", residual)
    return out


# ---------------------------------------------------------------------------- reference

def multiplier(x_scale: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray) -> np.ndarray:
    """The requantization multiplier per output channel: float32(x_scale * w_scale) / y_scale in float32."""
    product = np.float32(x_scale) * np.asarray(w_scale, np.float32)
    return (product / np.float32(y_scale)).astype(np.float32)


def clamp_bounds(y_scale: np.ndarray, y_zero: np.ndarray, activation: str, max_value: Any) -> tuple[float, float]:
    """[low, high] of t = acc * m before rounding (integers: clamping first saturates exactly)."""
    lo, hi = QRANGE[np.asarray(y_zero).dtype.name]
    z = int(y_zero)
    low, high = float(lo - z), float(hi - z)
    if activation == "relu":
        low = max(low, 0.0)
    if max_value is not None:
        high = min(high, float(np.rint(np.float32(max_value) / np.float32(y_scale))))
    return low, high


def float_activation(p: np.ndarray, activation: str, max_value: Any) -> np.ndarray:
    if activation == "relu":
        p = np.maximum(p, np.float32(0))
        if max_value is not None:
            p = np.minimum(p, np.float32(max_value))
    return p


def requantize(acc: np.ndarray, x_scale, w_scale, y_scale, y_zero, *, activation: str, max_value: Any,
               residual: tuple | None = None, post_activation: str = "linear",
               post_max_value: Any = None) -> np.ndarray:
    """int accumulators (bias included) -> the quantized output, as the module docstring defines it;
    ``residual``: (r, r_scale, r_zero)."""
    if residual is None:
        t = acc.astype(np.float32) * multiplier(x_scale, w_scale, y_scale)
        low, high = clamp_bounds(y_scale, y_zero, activation, max_value)
    else:
        r, r_scale, r_zero = residual
        product = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
        p = float_activation(acc.astype(np.float32) * product, activation, max_value)
        r = (np.asarray(r).astype(np.int64) - int(r_zero)).astype(np.float32) * np.float32(r_scale)
        y = float_activation((p + r).astype(np.float32), post_activation, post_max_value)
        t = (y / np.float32(y_scale)).astype(np.float32)
        low, high = clamp_bounds(y_scale, y_zero, "linear", None)
    q = np.rint(np.clip(t, np.float32(low), np.float32(high))).astype(np.int64) + int(y_zero)
    return q.astype(np.asarray(y_zero).dtype)


def _check_symmetric(w_zero: np.ndarray, op: str) -> None:
    if np.any(np.asarray(w_zero) != 0):
        raise ValueError(f"{op}: the weight zero points must be 0 (symmetric int8 weights)")


def _epilogue(acc, xs, ws, ys, yz, residual, attrs):
    return requantize(acc, xs, ws, ys, yz, activation=attrs["activation"], max_value=attrs["max_value"],
                      residual=tuple(residual) if attrs["has_residual"] else None,
                      post_activation=attrs["post_activation"], post_max_value=attrs["post_max_value"])


def _matmul_reference(x, xs, xz, w, ws, wz, bias, ys, yz, *residual, **attrs):
    _check_symmetric(wz, "qlinear_matmul")
    # in float64, whose every partial sum of int8 x int8 products is exact (|sum| < 2^53), numpy's matmul
    # runs on BLAS; on int64 it loops in C without it, a hundred times slower on a network's products
    # (as one 2-D product: numpy multiplies a stack of matrices one matrix at a time)
    x = np.asarray(x)
    centered = (x.reshape(-1, x.shape[-1]).astype(np.int64) - int(xz)).astype(np.float64)
    acc = np.rint(centered @ np.asarray(w).astype(np.float64)).astype(np.int64).reshape(*x.shape[:-1], -1)
    return _epilogue(acc + np.asarray(bias).astype(np.int64), xs, ws, ys, yz, residual, attrs)


def _conv_reference(x, xs, xz, w, ws, wz, bias, ys, yz, *residual, strides, dilations, pads, groups, bindings=None,
                    **attrs):
    _check_symmetric(wz, "qlinear_conv")
    # float64 holds every partial sum of int8 x int8 products exactly (|sum| < 2^53); padding is 0
    # in the centered domain, i.e. the input's zero point, as an integer kernel pads
    centered = (np.asarray(x).astype(np.int64) - int(xz)).astype(np.float64)
    y = get("conv").reference(centered, np.asarray(w).astype(np.float64), strides=strides, dilations=dilations,
                              pads=pads, groups=groups, bindings=bindings)
    acc = np.rint(y).astype(np.int64) + np.asarray(bias).astype(np.int64)
    return _epilogue(acc, xs, ws, ys, yz, residual, attrs)


register(OpDef("qlinear_matmul", _matmul_infer, _matmul_reference, attrs=dict(_EPILOGUE), num_inputs=(9, 12),
               not_differentiable=True,
               doc="Integer matmul (x uint8/int8 (..., K) @ w int8 (K, N)) with int32 accumulation, the int32 bias "
                   "added, and a requantizing epilogue (relu as a clamp) to uint8/int8; ONNX QLinearConv's "
                   "operands, then an optional uint8/int8 residual (r, scale, zero point) added after the activation."))
register(OpDef("qlinear_conv", _conv_infer, _conv_reference, attrs={**_CONV, **_EPILOGUE}, num_inputs=(9, 12),
               uses_dims=True, not_differentiable=True,
               doc="Integer channels-last convolution (x uint8/int8, kernel int8 (*k, C/groups, O)) with int32 "
                   "accumulation, the int32 bias added, a requantizing epilogue (relu as a clamp) and an optional "
                   "residual."))


def _requantize_infer(types):
    q, in_scale, in_zero, out_scale, out_zero = types
    if q.dtype not in QUANTIZED_DTYPES or in_zero.dtype != q.dtype or out_zero.dtype not in QUANTIZED_DTYPES:
        raise ShapeError(f"requantize_linear: the input and its zero point must share one of "
                         f"{', '.join(QUANTIZED_DTYPES)} and the output zero point be one; got {q.dtype}, "
                         f"{in_zero.dtype} and {out_zero.dtype}")
    for name, t in (("input scale", in_scale), ("input zero point", in_zero), ("output scale", out_scale),
                    ("output zero point", out_zero)):
        if t.rank != 0:
            raise ShapeError(f"requantize_linear: the {name} must be a scalar (per tensor), got {fmt_shape(t.shape)}")
    if in_scale.dtype != "float32" or out_scale.dtype != "float32":
        raise ShapeError("requantize_linear: the scales must be float32")
    return TensorType(out_zero.dtype, q.shape)


def _requantize(q, in_scale, in_zero, out_scale, out_zero):
    from graphc.ops.quantize import dequantize_linear, quantize_linear

    return quantize_linear(dequantize_linear(q, in_scale, in_zero), out_scale, out_zero)


register(OpDef("requantize_linear", _requantize_infer, _requantize, num_inputs=5, fusion_kind="broadcast",
               not_differentiable=True,
               doc="quantize_linear(dequantize_linear(q, in_scale, in_zero), out_scale, out_zero) in one pass, per "
                   "tensor (uint8/int8 in and out)."))


def _per_tensor_params(op: str, params) -> None:
    for name, t in params:
        if t.rank != 0:
            raise ShapeError(f"{op}: the {name} must be a scalar (per tensor), got {fmt_shape(t.shape)}")
        if name.endswith("scale") and t.dtype != "float32":
            raise ShapeError(f"{op}: the {name} must be float32, got {t.dtype}")


def _add_infer(types):
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = types
    for name, q, zero in (("first", a, a_zero), ("second", b, b_zero)):
        if q.dtype not in QUANTIZED_DTYPES or zero.dtype != q.dtype:
            raise ShapeError(f"qlinear_add: the {name} operand and its zero point must share one of "
                             f"{', '.join(QUANTIZED_DTYPES)}, got {q.dtype} and {zero.dtype}")
    if y_zero.dtype not in QUANTIZED_DTYPES:
        raise ShapeError(f"qlinear_add: the output zero point must be one of {', '.join(QUANTIZED_DTYPES)}, "
                         f"got {y_zero.dtype}")
    _per_tensor_params("qlinear_add", (("first scale", a_scale), ("first zero point", a_zero),
                                       ("second scale", b_scale), ("second zero point", b_zero),
                                       ("output scale", y_scale), ("output zero point", y_zero)))
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"qlinear_add: the operands must have one shape, got {fmt_shape(a.shape)} and "
                         f"{fmt_shape(b.shape)}")
    return TensorType(y_zero.dtype, a.shape)


def _add(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero):
    from graphc.ops.quantize import dequantize_linear, quantize_linear

    return quantize_linear(dequantize_linear(a, a_scale, a_zero) + dequantize_linear(b, b_scale, b_zero), y_scale,
                           y_zero)


register(OpDef("qlinear_add", _add_infer, _add, num_inputs=8, not_differentiable=True,
               doc="quantize_linear(dequantize_linear(a) + dequantize_linear(b), y_scale, y_zero) in one pass, per "
                   "tensor, operands of one shape (uint8/int8 in and out)."))


# ---------------------------------------------------------------------------- ONNX
# Exported back as the QDQ pattern it came from (DequantizeLinear on x, w and the bias, the float
# product and activation, QuantizeLinear), which onnxruntime fuses into its own integer kernels.

def _dequantized_operands(ctx, w_name: str, w_axis: int) -> tuple[str, str, str]:
    per_channel = ctx.input_type(W_SCALE).rank == 1
    if per_channel:
        ctx.require_opset(13, "per-channel DequantizeLinear")
    name = ctx.input_name
    x = ctx.node("DequantizeLinear", [name(X), name(X_SCALE), name(X_ZERO)])
    w = ctx.node("DequantizeLinear", [w_name, name(W_SCALE), name(W_ZERO)], axis=w_axis if per_channel else None)
    bias_scale = ctx.node("Mul", [name(X_SCALE), name(W_SCALE)])
    bias = ctx.node("DequantizeLinear", [name(BIAS), bias_scale], axis=0 if per_channel else None)
    return x, w, bias


def _onnx_relu(ctx, y: str, activation: str, max_value) -> str:
    if activation != "relu":
        return y
    if max_value is None:
        return ctx.node("Relu", [y])
    return ctx.node("Clip", [y, ctx.scalar(0.0, "float32"), ctx.scalar(float(max_value), "float32")])


def _onnx_epilogue(ctx, y: str) -> None:
    a = ctx.attrs
    y = _onnx_relu(ctx, y, a["activation"], a["max_value"])
    if a["has_residual"]:
        r = ctx.node("DequantizeLinear", [ctx.input_name(R), ctx.input_name(R_SCALE), ctx.input_name(R_ZERO)])
        y = _onnx_relu(ctx, ctx.node("Add", [y, r]), a["post_activation"], a["post_max_value"])
    ctx.node("QuantizeLinear", [y, ctx.input_name(Y_SCALE), ctx.input_name(Y_ZERO)], ctx.output_name(0))


def _matmul_to_onnx(ctx, op):
    x, w, bias = _dequantized_operands(ctx, ctx.input_name(W), 1)
    _onnx_epilogue(ctx, ctx.node("Add", [ctx.node("MatMul", [x, w]), bias]))


def _conv_to_onnx(ctx, op):
    from graphc.ops.conv import onnx_channels_first, onnx_channels_last, onnx_window, spatial_attrs

    rank = ctx.input_type(X).rank
    nsp = rank - 2
    a = ctx.attrs
    strides, dilations, pads = spatial_attrs(nsp, a["strides"], a["dilations"], a["pads"], "qlinear_conv")
    kernel = ctx.input_type(W).shape[:nsp]
    perm = [nsp + 1, nsp, *range(nsp)]  # (*k, C/g, O) -> (O, C/g, *k)
    w_oihw = ctx.derived(W, lambda k: np.ascontiguousarray(np.transpose(k, perm)), "oihw") \
        or ctx.transpose(ctx.input_name(W), perm)
    x, w, bias = _dequantized_operands(ctx, w_oihw, 0)
    xc, pad_attrs = onnx_window(ctx, onnx_channels_first(ctx, x, rank), ctx.input_type(X).shape[1:-1], kernel,
                                strides, dilations, pads)
    y = ctx.node("Conv", [xc, w, bias], kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 group=int(a["groups"]), **pad_attrs)
    _onnx_epilogue(ctx, onnx_channels_last(ctx, y, rank))


def _requantize_to_onnx(ctx, op):
    x = ctx.node("DequantizeLinear", [ctx.input_name(0), ctx.input_name(1), ctx.input_name(2)])
    ctx.node("QuantizeLinear", [x, ctx.input_name(3), ctx.input_name(4)], ctx.output_name(0))


def _add_to_onnx(ctx, op):
    name = ctx.input_name
    a = ctx.node("DequantizeLinear", [name(0), name(1), name(2)])
    b = ctx.node("DequantizeLinear", [name(3), name(4), name(5)])
    ctx.node("QuantizeLinear", [ctx.node("Add", [a, b]), name(6), name(7)], ctx.output_name(0))


get("qlinear_matmul").to_onnx = _matmul_to_onnx
get("qlinear_conv").to_onnx = _conv_to_onnx
get("requantize_linear").to_onnx = _requantize_to_onnx
get("qlinear_add").to_onnx = _add_to_onnx


# ---------------------------------------------------------------------------- native

def _params(inputs, attrs) -> dict[str, Any]:
    x, xs, xz, w, ws, wz, bias, ys, yz = inputs[:9]
    residual = tuple(inputs[R:]) if attrs["has_residual"] else None
    return {"x_scale": xs, "x_zero": xz, "w_scale": ws, "bias": bias, "y_scale": ys, "y_zero": yz,
            "activation": attrs["activation"], "max_value": attrs["max_value"], "residual": residual,
            "post_activation": attrs["post_activation"], "post_max_value": attrs["post_max_value"]}


def _matmul_lower(kb, op, *inputs, out, **attrs):
    kb.qlinear_matmul(inputs[X], inputs[W], out, **_params(inputs, attrs))


def _conv_lower(kb, op, *inputs, out, **attrs):
    from graphc.ops.conv import spatial_attrs

    x = inputs[X]
    s, d, p = spatial_attrs(x.rank - 2, attrs["strides"], attrs["dilations"], attrs["pads"], op.type)
    kb.qlinear_conv(x, inputs[W], out, strides=s, dilations=d, pads=p, groups=attrs["groups"],
                    **_params(inputs, attrs))


def _dequantized(m, v, scale, zero, dtype: str):
    """dequantize_linear's native formula (ops/quantize.py): the same float32 steps, so the same bits."""
    return m.mul(m.cast(m.sub(m.cast(v, "int32", dtype), m.cast(zero, "int32", dtype)), "float32", "int32"), scale)


def _quantized(m, x, scale, zero, zdtype: str, out_dtype: str):
    """quantize_linear's native formula (ops/quantize.py)."""
    lo, hi = QRANGE[out_dtype]
    zf = m.cast(zero, "float32", zdtype)
    t = m.div(x, scale)
    low, high = m.sub(lo, zf), m.sub(hi, zf)
    t = m.select(m.cmp("<", t, low), low, t)
    t = m.select(m.cmp(">", t, high), high, t)
    r = m.sub(m.add(t, _ROUNDER), _ROUNDER)
    return m.cast(m.cast(m.add(r, zf), "int32", "float32"), out_dtype, "int32")


def _requantize_lower(kb, op, q, in_scale, in_zero, out_scale, out_zero, *, out):
    """The two elementwise kernels' formulas in one."""

    def body(m, v, s1, z1, s2, z2):
        return _quantized(m, _dequantized(m, v, s1, z1, q.dtype), s2, z2, out_zero.dtype, out.dtype)

    kb.map(out, [q, in_scale, in_zero, out_scale, out_zero], body, name="requantize_linear", cost=5)


def _add_lower(kb, op, a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero, *, out):
    """Two dequantizes, the float32 sum and the quantize, in one elementwise kernel."""

    def body(m, va, sa, za, vb, sb, zb, sy, zy):
        total = m.add(_dequantized(m, va, sa, za, a.dtype), _dequantized(m, vb, sb, zb, b.dtype))
        return _quantized(m, total, sy, zy, y_zero.dtype, out.dtype)

    kb.map(out, [a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero], body, name="qlinear_add", cost=8)


get("qlinear_matmul").lower = _matmul_lower
get("qlinear_conv").lower = _conv_lower
get("requantize_linear").lower = _requantize_lower
get("qlinear_add").lower = _add_lower
