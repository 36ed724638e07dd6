"""Scales and zero points: activations asymmetric from a calibrated range, weights symmetric per channel.

The conventions are onnxruntime's static quantization's: activations are asymmetric (a zero point;
uint8 by default, int8 on request), weights are
int8 symmetric in [-127, 127] (zero point 0), a range always contains 0 (so that zero padding and
ReLU's zeros are exact), and a bias is int32 with scale ``input scale * weight scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ops.quantize import QRANGE, quantize_linear

ACTIVATION_DTYPES = ("int8", "uint8")
WEIGHT_LIMIT = 127  # symmetric int8 weights use [-127, 127], as onnxruntime does


@dataclass(frozen=True)
class QParams:
    """One quantization: scale (scalar or per channel), zero point of the quantized dtype, channel axis."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = -1

    @property
    def dtype(self) -> str:
        return self.zero_point.dtype.name


def activation_params(low: float, high: float, dtype: str = "int8") -> QParams:
    """Asymmetric per-tensor parameters mapping [low, high] (widened to contain 0) onto ``dtype``'s range."""
    if dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"activation dtype must be one of {', '.join(ACTIVATION_DTYPES)}, got {dtype!r}")
    qmin, qmax = QRANGE[dtype]
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = np.float32((high - low) / (qmax - qmin))
    if not np.isfinite(scale) or scale <= 0 or scale < np.finfo(np.float32).tiny:
        return QParams(np.array(1.0, np.float32), np.array(0 if dtype == "int8" else 128, dtype))
    zero_point = int(np.clip(np.rint(qmin - low / float(scale)), qmin, qmax))
    return QParams(np.array(scale, np.float32), np.array(zero_point, dtype))


def weight_params(w: np.ndarray, per_channel: bool, axis: int = -1) -> QParams:
    """Symmetric int8 parameters: scale max|w| / 127 per output channel (``axis``) or per tensor."""
    w = np.asarray(w, np.float32)
    if per_channel:
        reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        amax = np.abs(w).max(axis=reduce) if w.size else np.zeros(w.shape[axis], np.float32)
    else:
        amax = np.asarray(np.abs(w).max() if w.size else 0.0)
    scale = (amax / WEIGHT_LIMIT).astype(np.float32)
    scale = np.where(scale > np.finfo(np.float32).tiny, scale, np.float32(1.0)).astype(np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int8), axis)


def quantize_weight(w: np.ndarray, params: QParams) -> np.ndarray:
    return quantize_linear(w, params.scale, params.zero_point, axis=params.axis)


def bias_params(input_scale: np.ndarray, weight_scale: np.ndarray, channels: int) -> QParams:
    """int32 bias parameters: scale input scale * weight scale (per channel), zero point 0."""
    scale = (np.float32(input_scale) * np.broadcast_to(weight_scale, (channels,))).astype(np.float32)
    scale = np.where(scale > np.finfo(np.float32).tiny, scale, np.float32(1.0)).astype(np.float32)
    return QParams(scale, np.zeros(channels, np.int32), 0)
