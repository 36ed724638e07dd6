"""Sums over many rows into short kept rows hold their float64 accumulators in registers (kernels/reduce.py,
:func:`accumulators_fit`): rows up to half the registers' doubles, for AVX-512 and for AVX2, and each column
is still summed row after row, so the result is the exactly rounded sum."""

from __future__ import annotations

import math

import numpy as np
import pytest
from llvmlite import binding as llvm

from graphc.backends.llvm.kernels.reduce import accumulators_fit
from graphc.backends.llvm.target import host_target
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import load, run_native

x86 = pytest.mark.skipif(not llvm.get_process_triple().startswith("x86_64"), reason="x86-64 targets")


@x86
@pytest.mark.parametrize("cpu, vw, width", [("x86-64-v4", 16, 128), ("x86-64-v4", 8, 128), ("x86-64-v3", 8, 32)])
def test_register_accumulators_take_rows_up_to_half_the_registers(cpu, vw, width):
    """Half the registers hold the row: 16 zmm of 8 doubles on AVX-512, 8 ymm of 4 on AVX2."""
    target = host_target(cpu)
    for inner in (1, 3, 17, 31, 32, 33, 37, 64, 127, 128, 129, 145, 256, 300):
        assert accumulators_fit(inner, vw, target) == (inner <= width), inner


def _sum_graph(shape, axes) -> Graph:
    g = Graph("sums")
    x = g.add_input("x", TensorType("float32", shape))
    g.set_outputs([OpBuilder(g, layer="sum").emit("reduce_sum", x, axes=axes)])
    return g


# kept rows in registers with a scalar tail (37), two reduced groups with a kept one between (131), and rows
# past the registers (145, 300 and 2100 on AVX-512, the accumulator row in memory; 145 in parts too, 29 x 31
# rows)
CASES = [((2, 29, 31, 145), (1, 2)), ((1, 112, 3, 37), (1, 2)), ((3, 7, 300), (1,)), ((9, 5, 7, 131), (0, 2)),
         ((2, 3, 2100), (1,))]


@pytest.mark.parametrize("shape, axes", CASES, ids=[f"{'x'.join(map(str, s))}-{a}" for s, a in CASES])
def test_sums_are_the_exactly_rounded_sums(shape, axes, rng):
    """Every column sums every reduced row once: the float64 sum of a few thousand float32 values, rounded
    once, is the exact sum rounded (math.fsum) for these inputs; a lost or repeated row would be far off.
    The same bits on one thread and on two."""
    graph = _sum_graph(shape, axes)
    lib = load(graph)
    x = rng.standard_normal(shape).astype(np.float32)
    moved = np.moveaxis(x, axes, range(len(axes))).reshape(-1, *[n for i, n in enumerate(shape) if i not in axes])
    flat = moved.reshape(moved.shape[0], -1).astype(np.float64)
    exact = np.array([math.fsum(flat[:, j]) for j in range(flat.shape[1])], np.float64)
    want = exact.astype(np.float32).reshape(moved.shape[1:])
    one, = run_native(lib, {"x": x}, threads=1)
    two, = run_native(lib, {"x": x}, threads=2)
    np.testing.assert_array_equal(one, want)
    np.testing.assert_array_equal(two, one)


@pytest.mark.parametrize("kind", ["reduce_max", "reduce_min"])
@pytest.mark.parametrize("shape, axes", CASES, ids=[f"{'x'.join(map(str, s))}-{a}" for s, a in CASES])
def test_max_and_min_over_rows_in_registers(kind, shape, axes, rng):
    """Maxima and minima take the same path (their float32 row in registers): numpy's, exactly, with a
    NaN in one column propagated to that column only."""
    g = Graph("extrema")
    x = g.add_input("x", TensorType("float32", shape))
    g.set_outputs([OpBuilder(g, layer="extremum").emit(kind, x, axes=axes)])
    lib = load(g)
    data = rng.standard_normal(shape).astype(np.float32)
    data.reshape(-1, shape[-1])[len(data.reshape(-1, shape[-1])) // 2, shape[-1] // 2] = np.nan
    want = (np.max if kind == "reduce_max" else np.min)(data, axis=axes)
    for threads in (1, 2):
        got, = run_native(lib, {"x": data}, threads=threads)
        np.testing.assert_array_equal(got, want)
