"""Softmax over rows in native code: the row kernel of commit ``--before`` against today's.

::

    python -m benchmarks.softmax                       # rows of 17, 40, 128, 512; softmax and log_softmax
    python -m benchmarks.softmax --lengths 128 --rows 512 --repeat 15

Each case is a graph of one ``softmax`` (or ``log_softmax``) over the last axis of a (rows, length)
float32 input (attention scores: 4 heads x 128 queries = 512 rows), compiled twice: with today's
``emit_softmax`` and with the one of ``--before`` (its ``kernels/reduce.py`` read from git and swapped in
while compiling, the build cache bypassed). Both libraries run in this one process on one thread,
timed interleaved (``graphc.bench.measure``, medians); the largest absolute error of each against
float64 NumPy is printed beside. Writes ``benchmarks/results/<date>-softmax.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.kernel_ab import function_of, time_pair, write_table
from benchmarks.vector_math import _library_call
from graphc.backends.llvm.kernels import reduce as reduce_kernels
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder

BEFORE = "14f7169"  # the row kernel with NaN-propagating maxima and lane-by-lane reductions


def _graph(op: str, rows: int, length: int, name: str) -> Graph:
    g = Graph(name)
    x = g.add_input("x", TensorType("float32", (rows, length)))
    g.set_outputs([OpBuilder(g).emit(op, x, axis=-1)])
    return g


def _exact(op: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return shifted - log_sum if op == "log_softmax" else np.exp(shifted - log_sum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="commit whose emit_softmax is 'before'")
    ap.add_argument("--lengths", default="17,40,128,512", help="row lengths")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = []
    for op in ("softmax", "log_softmax"):
        for length in [int(n) for n in args.lengths.split(",")]:
            x = (rng.standard_normal((args.rows, length)) * 3).astype(np.float32)
            after, inst_after = _library_call(_graph(op, args.rows, length, f"{op}_{length}"), [x])
            # named apart: a library of one path loads once
            with function_of(args.before, reduce_kernels, "emit_softmax"):
                before, inst_before = _library_call(_graph(op, args.rows, length, f"{op}_{length}_before"), [x])
            exact = _exact(op, x)
            errors = [float(np.max(np.abs(call()[0] - exact))) for call in (before, after)]
            b, a = time_pair(before, after, args.repeat)
            lines.append(f"| {op} | {args.rows} x {length} | {b * 1e3:.1f} | {a * 1e3:.1f} | {b / a:.2f} | "
                         f"{errors[0]:.1e} | {errors[1]:.1e} |")
            print(lines[-1], flush=True)
            inst_after.close()
            inst_before.close()
    write_table(args.out, "softmax", f"Softmax rows: {args.before} against today",
                "`python -m benchmarks.softmax`; errors: largest |graphc - float64 NumPy|.",
                ["op", "input", "before µs", "after µs", "speed-up", "before max err", "after max err"], 2, lines,
                args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
