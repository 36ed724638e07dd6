"""quantize_linear / dequantize_linear: bit-exact against an integer NumPy model of ONNX's rule, on the
reference, onnxruntime and native code; odd shapes, ties, saturation, per-channel axes, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.onnx import OnnxRuntimeGraph
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.ops.registry import ShapeError
from tests.backends.llvm.helpers import load, run_native

QMIN = {"int8": -128, "uint8": 0, "int32": -2**31}
QMAX = {"int8": 127, "uint8": 255, "int32": 2**31 - 1}


def integer_quantize(x, scale, zero_point, axis):
    """ONNX QuantizeLinear written with floor and integer arithmetic: ties go to the even integer."""
    x = np.asarray(x, np.float32)
    shape = [1] * x.ndim
    if np.ndim(scale):
        shape[axis % x.ndim] = len(scale)
    t = (x / np.asarray(scale, np.float32).reshape(shape)).astype(np.float64)  # the division in float32
    low = np.floor(t)
    frac = t - low
    up = (frac > 0.5) | ((frac == 0.5) & (low.astype(np.int64) % 2 == 1))
    q = low.astype(np.int64) + up + np.asarray(zero_point).astype(np.int64).reshape(shape or ())
    dtype = np.asarray(zero_point).dtype.name
    return np.clip(q, QMIN[dtype], QMAX[dtype]).astype(dtype)


def integer_dequantize(q, scale, zero_point, axis):
    shape = [1] * q.ndim
    if np.ndim(scale):
        shape[axis % q.ndim] = len(scale)
    diff = q.astype(np.int64) - np.asarray(zero_point).astype(np.int64).reshape(shape or ())
    return diff.astype(np.float32) * np.asarray(scale, np.float32).reshape(shape)


# (input shape, axis, per channel, zero point dtype): odd sizes 1, 3, 7, 17
CASES = [
    ((17,), -1, False, "int8"),
    ((1, 7), -1, True, "int8"),
    ((3, 7, 17), 1, True, "uint8"),
    ((7, 3, 1, 17), 0, True, "int8"),
    ((3, 17), -1, False, "uint8"),
    ((1, 3, 3, 7), -1, True, "uint8"),
]


def _params(rng, shape, axis, per_channel, dtype):
    n = shape[axis % len(shape)] if per_channel else None
    scale = rng.uniform(0.01, 0.5, size=n).astype(np.float32) if n else np.float32(rng.uniform(0.01, 0.5))
    lo, hi = (-20, 20) if dtype == "int8" else (100, 156)
    zero_point = rng.integers(lo, hi, size=n).astype(dtype) if n else np.array(rng.integers(lo, hi), dtype)
    return np.asarray(scale, np.float32), np.asarray(zero_point)


def _inputs(rng, shape, scale, axis):
    """Values spread over and beyond the quantized range, with exact ties (k + 0.5) * scale."""
    x = (rng.standard_normal(shape) * 80 * np.max(scale)).astype(np.float32)
    flat = x.reshape(-1)
    s = np.broadcast_to(_along(scale, len(shape), axis), shape).reshape(-1)
    k = rng.integers(-140, 140, size=flat.size)
    ties = rng.random(flat.size) < 0.3
    flat[ties] = ((k + 0.5) * s)[ties]
    return x


def _along(p, rank, axis):
    if np.ndim(p) == 0:
        return p
    shape = [1] * rank
    shape[axis % rank] = len(p)
    return p.reshape(shape)


def _graph(cases, rng):
    """One graph with a quantize and a dequantize per case; returns it and the feeds."""
    g = Graph("qdq")
    feeds, outputs = {}, []
    for i, (shape, axis, per_channel, dtype) in enumerate(cases):
        scale, zero_point = _params(rng, shape, axis, per_channel, dtype)
        x = g.add_input(f"x{i}", TensorType("float32", shape))
        feeds[x] = _inputs(rng, shape, scale, axis)
        b = OpBuilder(g, layer=f"case{i}")
        s, z = g.add_constant(f"s{i}", scale), g.add_constant(f"z{i}", zero_point)
        q = b.quantize_linear(x, s, z, axis=axis)
        outputs += [q, b.dequantize_linear(q, s, z, axis=axis)]
    g.set_outputs(outputs)
    return g, feeds


def _expected(g, feeds):
    want = {}
    for op in g.ops():
        x, s, z = op.inputs
        args = (g.constants[s], g.constants[z], op.attrs.get("axis", -1))
        if op.type == "quantize_linear":
            want[op.outputs[0]] = integer_quantize(feeds[x], *args)
        else:
            want[op.outputs[0]] = integer_dequantize(want[x], *args)
    return want


def _assert_exact(got, want, where):
    for name, w in want.items():
        assert got[name].dtype == w.dtype, f"{where} {name}: dtype {got[name].dtype} != {w.dtype}"
        np.testing.assert_array_equal(got[name], w, err_msg=f"{where} {name}")


def test_reference_is_bit_exact_on_odd_shapes(rng):
    g, feeds = _graph(CASES, rng)
    _assert_exact(run(g, feeds), _expected(g, feeds), "reference")


def test_onnxruntime_is_bit_exact_on_odd_shapes(rng):
    g, feeds = _graph(CASES, rng)
    _assert_exact(OnnxRuntimeGraph(g).run(feeds), _expected(g, feeds), "onnxruntime")


def test_native_is_bit_exact_on_odd_shapes(rng):
    g, feeds = _graph(CASES, rng)
    got = dict(zip(g.outputs, run_native(load(g), feeds)))
    _assert_exact(got, _expected(g, feeds), "native")


def test_ties_round_half_to_even_and_saturate():
    x = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 63.75, 64.0, -64.25, -70.0, 1e9, -np.inf, np.inf], np.float32)
    q = run_one("quantize_linear", x, np.float32(0.5), np.int8(0))
    np.testing.assert_array_equal(q, [0, 2, 0, -2, 2, 127, 127, -128, -128, 127, -128, 127])
    qu = run_one("quantize_linear", x, np.float32(0.5), np.uint8(128))
    np.testing.assert_array_equal(qu, [128, 130, 128, 126, 130, 255, 255, 0, 0, 255, 0, 255])
    # the zero point is added after rounding: 0.5 + 3 rounds to 0 + 3, not to round(3.5) = 4
    np.testing.assert_array_equal(run_one("quantize_linear", np.float32([0.5, 1.5]), np.float32(1), np.int8(3)),
                                  [3, 5])


def test_dequantize_int32_bias_and_per_channel_axis():
    q = np.array([[-2**31, 5, 2**31 - 1]], np.int32)
    d = run_one("dequantize_linear", q, np.float32(2.0 ** -20), np.int32(0))
    np.testing.assert_array_equal(d, integer_dequantize(q, np.float32(2.0 ** -20), np.int32(0), -1))
    q8 = np.arange(-3, 3, dtype=np.int8).reshape(2, 3)
    d8 = run_one("dequantize_linear", q8, np.float32([0.5, 2.0]), np.int8([1, -1]), axis=0)
    np.testing.assert_array_equal(d8, [[-2.0, -1.5, -1.0], [2.0, 4.0, 6.0]])


def run_one(op, x, scale, zero_point, **attrs):
    g = Graph(op)
    xv = g.add_input("x", TensorType.of(np.asarray(x)))
    out = OpBuilder(g).emit(op, xv, g.add_constant("s", np.asarray(scale)), g.add_constant("z", np.asarray(zero_point)),
                            **attrs)
    g.set_outputs([out])
    return run(g, {"x": np.asarray(x)})[out]


@pytest.mark.parametrize("args, message", [
    ((np.zeros(3, np.float64), np.float32(1), np.int8(0)), "input must be float32"),
    ((np.zeros(3, np.float32), np.float32(1), np.int32(0)), "zero point .* must be one of int8, uint8"),
    ((np.zeros(3, np.float32), np.float64(1), np.int8(0)), "scale must be float32"),
    ((np.zeros((2, 3), np.float32), np.ones(2, np.float32), np.zeros(2, np.int8)), "2 per-channel scales for axis -1"),
    ((np.zeros(3, np.float32), np.ones(3, np.float32), np.zeros(2, np.int8)), "same shape"),
    ((np.zeros(3, np.float32), np.ones((3, 1), np.float32), np.zeros((3, 1), np.int8)), "scalar .* or a vector"),
])
def test_bad_parameters_are_refused_naming_them(args, message):
    with pytest.raises(ShapeError, match=message):
        run_one("quantize_linear", *args)


def test_dequantize_refuses_mismatched_zero_point():
    with pytest.raises(ShapeError, match="dequantize_linear: input and zero point"):
        run_one("dequantize_linear", np.zeros(3, np.int8), np.float32(1), np.uint8(0))
