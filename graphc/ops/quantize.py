"""Linear quantization: ``quantize_linear`` and ``dequantize_linear``, with ONNX's semantics.

``quantize_linear(x, scale, zero_point)`` is ``saturate(round_half_even(x / scale) + zero_point)``
and ``dequantize_linear(q, scale, zero_point)`` is ``(q - zero_point) * scale``, exactly as ONNX's
QuantizeLinear / DequantizeLinear. Scale and zero point are inputs (usually constants), not
attributes, so that per-channel parameters are arrays: a scalar pair quantizes per tensor, a
pair of vectors per channel along ``axis`` (graphc's channel axis, the last, by default). The
zero point's dtype (int8 or uint8; int32 for dequantizing biases) is the quantized dtype.

Both ops sit on the integer side of a graph, so they are not differentiable: the gradient of a
rounding step is zero almost everywhere. Quantization-aware training needs a float-to-float
fake-quant op with a straight-through gradient instead, which these two compose into.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape, norm_axis
from graphc.ops.registry import OpDef, ShapeError, get, register

QUANTIZED_DTYPES = ("int8", "uint8")
DEQUANTIZABLE_DTYPES = ("int8", "uint8", "int32")
# The representable range of each quantized dtype: where quantize_linear saturates.
QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2**31, 2**31 - 1)}


def _check_params(x: TensorType, scale: TensorType, zero_point: TensorType, axis: int, op: str) -> None:
    if scale.dtype != "float32":
        raise ShapeError(f"{op}: the scale must be float32, got {scale.dtype}")
    if scale.shape != zero_point.shape:
        raise ShapeError(f"{op}: scale {fmt_shape(scale.shape)} and zero point {fmt_shape(zero_point.shape)} "
                         "must have the same shape")
    if scale.rank == 0:
        return
    if scale.rank != 1:
        raise ShapeError(f"{op}: the scale must be a scalar (per tensor) or a vector (per channel), got shape "
                         f"{fmt_shape(scale.shape)}")
    ax = norm_axis(axis, x.rank)
    if not dims.compatible(scale.shape[0], x.shape[ax]):
        raise ShapeError(f"{op}: {scale.shape[0]} per-channel scales for axis {axis} of length {x.shape[ax]} "
                         f"(input {fmt_shape(x.shape)})")


def _quantize_infer(types, *, axis):
    x, scale, zero_point = types
    if x.dtype != "float32":
        raise ShapeError(f"quantize_linear: the input must be float32, got {x.dtype}")
    if zero_point.dtype not in QUANTIZED_DTYPES:
        raise ShapeError(f"quantize_linear: the zero point (its dtype is the output's) must be one of "
                         f"{', '.join(QUANTIZED_DTYPES)}, got {zero_point.dtype}")
    _check_params(x, scale, zero_point, axis, "quantize_linear")
    return TensorType(zero_point.dtype, x.shape)


def _dequantize_infer(types, *, axis):
    q, scale, zero_point = types
    if q.dtype not in DEQUANTIZABLE_DTYPES or zero_point.dtype != q.dtype:
        raise ShapeError(f"dequantize_linear: input and zero point must share one of "
                         f"{', '.join(DEQUANTIZABLE_DTYPES)}, got {q.dtype} and {zero_point.dtype}")
    _check_params(q, scale, zero_point, axis, "dequantize_linear")
    return TensorType("float32", q.shape)


def along(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A per-channel parameter shaped to broadcast along ``axis`` of a rank-``rank`` array (scalars stay)."""
    if param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis % rank] = param.shape[0]
    return param.reshape(shape)


def quantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """The reference: x / scale in float32, rounded half to even, plus the zero point, saturated."""
    x = np.asarray(x, dtype=np.float32)
    zero_point = np.asarray(zero_point)
    lo, hi = QRANGE[zero_point.dtype.name]
    s = along(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    z = along(zero_point, x.ndim, axis).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        q = np.rint(x / s).astype(np.float64) + z
    return np.clip(q, lo, hi).astype(zero_point.dtype)


def dequantize_linear(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """The reference: (q - zero_point) in integers, times the scale in float32."""
    q = np.asarray(q)
    s = along(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    z = along(np.asarray(zero_point), q.ndim, axis)
    return ((q.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s).astype(np.float32)


register(OpDef("quantize_linear", _quantize_infer, quantize_linear, attrs={"axis": -1}, num_inputs=3,
               fusion_kind="broadcast", not_differentiable=True,
               doc="ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point) to the zero point's "
                   "dtype (int8/uint8); scalar scale and zero point per tensor, vectors per channel along axis."))
register(OpDef("dequantize_linear", _dequantize_infer, dequantize_linear, attrs={"axis": -1}, num_inputs=3,
               fusion_kind="broadcast", not_differentiable=True,
               doc="ONNX DequantizeLinear: (q - zero_point) * scale in float32 (q: int8, uint8 or int32); "
                   "scalar scale and zero point per tensor, vectors per channel along axis."))


# ---------------------------------------------------------------------------- ONNX

def _qdq_to_onnx(onnx_type: str):
    def to_onnx(ctx, op):
        rank = ctx.input_type(0).rank
        per_channel = ctx.input_type(1).rank == 1
        if per_channel:
            ctx.require_opset(13, f"per-channel {onnx_type}")
        axis = ctx.attrs["axis"] % rank if per_channel else None
        ctx.node(onnx_type, [ctx.input_name(0), ctx.input_name(1), ctx.input_name(2)], ctx.output_name(0),
                 axis=axis)

    return to_onnx


get("quantize_linear").to_onnx = _qdq_to_onnx("QuantizeLinear")
get("dequantize_linear").to_onnx = _qdq_to_onnx("DequantizeLinear")


# ---------------------------------------------------------------------------- native
# Elementwise kernels over the broadcast parameters. Rounding half to even adds and subtracts
# 1.5 * 2^23, which leaves the nearest integer (ties to even) of any |t| < 2^22 in float32; t is
# clamped first to the saturation bounds shifted by the zero point (integers, so clamping before
# rounding saturates exactly like rounding first), which keeps it far inside that range.

_ROUNDER = 12582912.0  # 1.5 * 2^23


def _param_views(kb, x, scale, zero_point, axis: int):
    if scale.rank == 0:
        return scale, zero_point
    from graphc.ops.linalg import along_axis

    return along_axis(kb, scale, axis, x.rank), along_axis(kb, zero_point, axis, x.rank)


def _quantize_lower(kb, op, x, scale, zero_point, *, out, axis):
    lo, hi = QRANGE[out.dtype]
    zdtype = zero_point.dtype

    def body(m, v, s, z):
        zf = m.cast(z, "float32", zdtype)
        t = m.div(v, s)
        low, high = m.sub(lo, zf), m.sub(hi, zf)  # plain compares: NaN-propagating min/max cost 3x the kernel
        t = m.select(m.cmp("<", t, low), low, t)
        t = m.select(m.cmp(">", t, high), high, t)
        r = m.sub(m.add(t, _ROUNDER), _ROUNDER)
        return m.cast(m.cast(m.add(r, zf), "int32", "float32"), out.dtype, "int32")

    kb.map(out, [x, *_param_views(kb, x, scale, zero_point, axis)], body, name="quantize_linear", cost=4)


def _dequantize_lower(kb, op, q, scale, zero_point, *, out, axis):
    qdtype = q.dtype

    def body(m, v, s, z):
        diff = m.sub(m.cast(v, "int32", qdtype), m.cast(z, "int32", qdtype))
        return m.mul(m.cast(diff, "float32", "int32"), s)

    kb.map(out, [q, *_param_views(kb, q, scale, zero_point, axis)], body, name="dequantize_linear", cost=2)


get("quantize_linear").lower = _quantize_lower
get("dequantize_linear").lower = _dequantize_lower
