"""Transposes in native code: the strided copy of commit ``--before`` against today's.

::

    python -m benchmarks.transpose                      # the shapes below, 1 thread
    python -m benchmarks.transpose --before 748c9b4 --repeat 31

Each case is a graph of one ``transpose`` (float32), compiled twice: with today's ``strided_copy`` and
with the one of ``--before`` (its ``kernels/movement.py`` read from git and swapped in while compiling,
the build cache bypassed). Both libraries run in this one process on one thread, timed interleaved
(``graphc.bench.measure``, medians); their outputs must be equal bit for bit. GB/s counts the input read
and the output written once. Writes ``benchmarks/results/<date>-transpose.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.kernel_ab import function_of, time_pair, write_table
from benchmarks.vector_math import _library_call
from graphc.backends.llvm.kernels import movement
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder

BEFORE = "b46fd32"  # one element at a time where the last axis moves
# (shape, perm, where it comes from)
SHAPES = [
    ((1, 128, 4, 64), (0, 2, 3, 1), "TransformerEncoder's keys (b, s, h, d) -> (b, h, d, s)"),
    ((1, 128, 12, 64), (0, 2, 3, 1), "BERT-base's keys"),
    ((1, 128, 4, 64), (0, 2, 1, 3), "queries (b, h, s, d): the last axis kept"),
    ((1024, 1024), (1, 0), "a matrix"),
    ((32, 64, 7, 7), (0, 2, 3, 1), "NCHW -> NHWC, 64 channels"),
    ((1, 3, 224, 224), (0, 2, 3, 1), "NCHW -> NHWC, 3 channels"),
    ((1, 224, 224, 3), (0, 3, 1, 2), "NHWC -> NCHW, 3 channels"),
]


def _graph(shape: tuple, perm: tuple, name: str) -> Graph:
    g = Graph(name)
    x = g.add_input("x", TensorType("float32", shape))
    g.set_outputs([OpBuilder(g).emit("transpose", x, perm=perm)])
    return g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="commit whose strided_copy is 'before'")
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = []
    for shape, perm, source in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        name = "transpose_" + "_".join(map(str, shape)) + "_p" + "".join(map(str, perm))
        after, inst_after = _library_call(_graph(shape, perm, name), [x])
        with function_of(args.before, movement, "strided_copy"):  # named apart: a library of one path loads once
            before, inst_before = _library_call(_graph(shape, perm, f"{name}_before"), [x])
        y = after()[0]
        if not np.array_equal(y, before()[0]) or not np.array_equal(y, x.transpose(perm)):
            raise AssertionError(f"{name}: the two kernels' outputs differ")
        b, a = time_pair(before, after, args.repeat)
        gbs = 2 * x.nbytes / (a * 1e-3) / 1e9
        lines.append(f"| {' x '.join(map(str, shape))} | {perm} | {source} | {b * 1e3:.1f} | {a * 1e3:.1f} | "
                     f"{b / a:.2f} | {gbs:.0f} |")
        print(lines[-1], flush=True)
        inst_after.close()
        inst_before.close()
    write_table(args.out, "transpose", f"Transposes: {args.before} against today",
                "`python -m benchmarks.transpose`; outputs equal bit for bit.",
                ["input", "perm", "from", "before µs", "after µs", "speed-up", "after GB/s"], 3, lines, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
