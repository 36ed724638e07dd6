"""Pooling in native code: the pooling kernel of commit ``--before`` against today's.

::

    python -m benchmarks.pooling                        # the shapes below, 1 thread
    python -m benchmarks.pooling --before 8ac95f2 --repeat 31

Each case is a graph of one ``max_pool`` or ``avg_pool`` (NHWC float32), compiled twice: with today's
``emit_pool`` and with the one of ``--before`` (its ``kernels/conv.py`` read from git and swapped in while
compiling, the build cache bypassed). Both libraries run in this one process on one thread, timed
interleaved (``graphc.bench.measure``, medians); their outputs must be equal bit for bit. GB/s counts the
input read and the output written once. Writes ``benchmarks/results/<date>-pooling.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.kernel_ab import function_of, time_pair, write_table
from benchmarks.vector_math import _library_call
from graphc.backends.llvm.kernels import conv as conv_kernels
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder

BEFORE = "8ac95f2"  # every tap of every window checked against the input's bounds
# (op, batch, image side, channels, kernel, stride, padding, where the shape comes from)
SHAPES = [
    ("max_pool", 32, 28, 64, 2, 2, "valid", "separable_conv_bn, batch 32"),
    ("max_pool", 32, 10, 128, 2, 2, "valid", "separable_conv_bn, batch 32"),
    ("max_pool", 1, 224, 64, 2, 2, "valid", "VGG16 block1_pool"),
    ("max_pool", 1, 112, 128, 2, 2, "valid", "VGG16 block2_pool"),
    ("max_pool", 1, 147, 64, 3, 2, "valid", "InceptionV3's first"),
    ("max_pool", 1, 112, 64, 3, 2, "same", "ResNet50 pool1 (padded)"),
    ("avg_pool", 8, 56, 64, 2, 2, "valid", "odd: average"),
]


def _graph(op: str, batch: int, side: int, channels: int, kernel: int, stride: int, padding: str,
           name: str) -> Graph:
    g = Graph(name)
    x = g.add_input("x", TensorType("float32", (batch, side, side, channels)))
    pads = ((0, 0), (0, 0))
    if padding == "same":
        out = -(-side // stride)
        total = max(0, (out - 1) * stride + kernel - side)
        pads = ((total // 2, total - total // 2),) * 2
    g.set_outputs([OpBuilder(g).emit(op, x, kernel=(kernel, kernel), strides=(stride, stride), pads=pads)])
    return g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="commit whose emit_pool is 'before'")
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = []
    for op, batch, side, channels, kernel, stride, padding, source in SHAPES:
        x = rng.standard_normal((batch, side, side, channels)).astype(np.float32)
        name = f"{op}_{batch}_{side}_{channels}_{kernel}_{stride}_{padding}"
        after, inst_after = _library_call(_graph(op, batch, side, channels, kernel, stride, padding, name), [x])
        with function_of(args.before, conv_kernels, "emit_pool"):  # named apart: a library of one path loads once
            before, inst_before = _library_call(
                _graph(op, batch, side, channels, kernel, stride, padding, f"{name}_before"), [x])
        y = after()[0]
        if not np.array_equal(y, before()[0]):
            raise AssertionError(f"{name}: the two kernels' outputs differ")
        b, a = time_pair(before, after, args.repeat)
        gbs = (x.nbytes + y.nbytes) / (a * 1e-3) / 1e9
        lines.append(f"| {op} | {batch} x {side} x {side} x {channels} | {kernel}x{kernel} / {stride}, {padding} | "
                     f"{source} | {b * 1e3:.1f} | {a * 1e3:.1f} | {b / a:.2f} | {gbs:.0f} |")
        print(lines[-1], flush=True)
        inst_after.close()
        inst_before.close()
    write_table(args.out, "pooling", f"Pooling: {args.before} against today",
                "`python -m benchmarks.pooling`; outputs equal bit for bit.",
                ["op", "input", "window / stride", "from", "before µs", "after µs", "speed-up", "after GB/s"], 4,
                lines, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
