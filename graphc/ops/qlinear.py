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

The ops sit wholly on the integer side, so they are not differentiable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape
from graphc.ops.quantize import QRANGE, QUANTIZED_DTYPES
from graphc.ops.registry import OpDef, ShapeError, get, register

ACTIVATIONS = ("linear", "relu")
_EPILOGUE = {"activation": "linear", "max_value": None}
_CONV = {"strides": None, "dilations": None, "pads": None, "groups": 1}
# operand positions
X, X_SCALE, X_ZERO, W, W_SCALE, W_ZERO, BIAS, Y_SCALE, Y_ZERO = range(9)


def _check_operands(types: list[TensorType], op: str, activation: str, max_value: Any) -> int:
    """Checks every operand but the product's own shapes; returns the number of output channels."""
    x, xs, xz, w, ws, wz, bias, ys, yz = types
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
    if activation not in ACTIVATIONS:
        raise ShapeError(f"{op}: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if max_value is not None and (activation != "relu" or not float(max_value) > 0):
        raise ShapeError(f"{op}: max_value ({max_value!r}) needs activation 'relu' and must be positive")
    return n


def _matmul_infer(types, *, activation, max_value):
    n = _check_operands(types, "qlinear_matmul", activation, max_value)
    x, w = types[X], types[W]
    if w.rank != 2 or x.rank < 1 or not dims.compatible(x.shape[-1], w.shape[0]):
        raise ShapeError(f"qlinear_matmul: cannot multiply {fmt_shape(x.shape)} by a weight {fmt_shape(w.shape)}")
    return TensorType(types[Y_ZERO].dtype, x.shape[:-1] + (n,))


def _conv_infer(types, *, strides, dilations, pads, groups, activation, max_value):
    _check_operands(types, "qlinear_conv", activation, max_value)
    x, w = types[X], types[W]
    try:
        out = get("conv").infer([TensorType("float32", x.shape), TensorType("float32", w.shape)], strides=strides,
                                dilations=dilations, pads=pads, groups=groups)
    except ShapeError as exc:
        raise ShapeError(f"qlinear_conv: {exc}") from None
    return TensorType(types[Y_ZERO].dtype, out.shape)


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


def requantize(acc: np.ndarray, x_scale, w_scale, y_scale, y_zero, *, activation: str, max_value: Any) -> np.ndarray:
    """int accumulators (bias included) -> the quantized output, as the module docstring defines it."""
    t = acc.astype(np.float32) * multiplier(x_scale, w_scale, y_scale)
    low, high = clamp_bounds(y_scale, y_zero, activation, max_value)
    q = np.rint(np.clip(t, np.float32(low), np.float32(high))).astype(np.int64) + int(y_zero)
    return q.astype(np.asarray(y_zero).dtype)


def _check_symmetric(w_zero: np.ndarray, op: str) -> None:
    if np.any(np.asarray(w_zero) != 0):
        raise ValueError(f"{op}: the weight zero points must be 0 (symmetric int8 weights)")


def _matmul_reference(x, xs, xz, w, ws, wz, bias, ys, yz, *, activation, max_value):
    _check_symmetric(wz, "qlinear_matmul")
    centered = np.asarray(x).astype(np.int64) - int(xz)
    acc = np.matmul(centered, np.asarray(w).astype(np.int64)) + np.asarray(bias).astype(np.int64)
    return requantize(acc, xs, ws, ys, yz, activation=activation, max_value=max_value)


def _conv_reference(x, xs, xz, w, ws, wz, bias, ys, yz, *, strides, dilations, pads, groups, activation, max_value,
                    bindings=None):
    _check_symmetric(wz, "qlinear_conv")
    # float64 holds every partial sum of int8 x int8 products exactly (|sum| < 2^53); padding is 0
    # in the centered domain, i.e. the input's zero point, as an integer kernel pads
    centered = (np.asarray(x).astype(np.int64) - int(xz)).astype(np.float64)
    y = get("conv").reference(centered, np.asarray(w).astype(np.float64), strides=strides, dilations=dilations,
                              pads=pads, groups=groups, bindings=bindings)
    acc = np.rint(y).astype(np.int64) + np.asarray(bias).astype(np.int64)
    return requantize(acc, xs, ws, ys, yz, activation=activation, max_value=max_value)


register(OpDef("qlinear_matmul", _matmul_infer, _matmul_reference, attrs=dict(_EPILOGUE), num_inputs=9,
               not_differentiable=True,
               doc="Integer matmul (x uint8/int8 (..., K) @ w int8 (K, N)) with int32 accumulation, the int32 bias "
                   "added, and a requantizing epilogue (relu as a clamp) to uint8/int8; ONNX QLinearConv's operands."))
register(OpDef("qlinear_conv", _conv_infer, _conv_reference, attrs={**_CONV, **_EPILOGUE}, num_inputs=9,
               uses_dims=True, not_differentiable=True,
               doc="Integer channels-last convolution (x uint8/int8, kernel int8 (*k, C/groups, O)) with int32 "
                   "accumulation, the int32 bias added, and a requantizing epilogue (relu as a clamp)."))


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


def _onnx_epilogue(ctx, y: str) -> None:
    a = ctx.attrs
    if a["activation"] == "relu":
        if a["max_value"] is None:
            y = ctx.node("Relu", [y])
        else:
            y = ctx.node("Clip", [y, ctx.scalar(0.0, "float32"), ctx.scalar(float(a["max_value"]), "float32")])
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


get("qlinear_matmul").to_onnx = _matmul_to_onnx
get("qlinear_conv").to_onnx = _conv_to_onnx


# ---------------------------------------------------------------------------- native

def _params(inputs, attrs) -> dict[str, Any]:
    x, xs, xz, w, ws, wz, bias, ys, yz = inputs
    return {"x_scale": xs, "x_zero": xz, "w_scale": ws, "bias": bias, "y_scale": ys, "y_zero": yz,
            "activation": attrs["activation"], "max_value": attrs["max_value"]}


def _matmul_lower(kb, op, *inputs, out, **attrs):
    kb.qlinear_matmul(inputs[X], inputs[W], out, **_params(inputs, attrs))


def _conv_lower(kb, op, *inputs, out, **attrs):
    from graphc.ops.conv import spatial_attrs

    x = inputs[X]
    s, d, p = spatial_attrs(x.rank - 2, attrs["strides"], attrs["dilations"], attrs["pads"], op.type)
    kb.qlinear_conv(x, inputs[W], out, strides=s, dilations=d, pads=p, groups=attrs["groups"],
                    **_params(inputs, attrs))


get("qlinear_matmul").lower = _matmul_lower
get("qlinear_conv").lower = _conv_lower
