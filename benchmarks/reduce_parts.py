"""Sums over many rows into few kept rows in native code: the reduction of commit ``--before`` against today's.

::

    python -m benchmarks.reduce_parts                   # the shapes below, 1 and 2 threads
    python -m benchmarks.reduce_parts --before 748c9b4 --threads 2 --repeat 31
    python -m benchmarks.reduce_parts --kind max --before f5f7789   # a global max pool

Each case is a graph of one ``reduce_mean`` over the pixels of an NHWC tensor (a global average pool,
the squeeze of EfficientNet's squeeze-and-excitation blocks), compiled twice: with today's
``_reduce_keep_inner_wide`` and with the one of ``--before`` (its ``kernels/reduce.py`` read from git and
swapped in while compiling, the build cache bypassed). Both libraries run in this one process on the
same number of threads, timed interleaved (``graphc.bench.measure``, medians); their outputs must agree
to float32 rounding (the parts add their float64 sums in another order). GB/s counts the input read
once. Writes ``benchmarks/results/<date>-reduce_parts.md``.
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

BEFORE = "748c9b4"  # one work item per kept row
# (batch, side, channels, where the shape comes from)
SHAPES = [
    (1, 112, 32, "EfficientNetB0 block1a_se_squeeze"),
    (1, 56, 144, "EfficientNetB0 block2b_se_squeeze"),
    (1, 28, 240, "EfficientNetB0 block3b_se_squeeze"),
    (1, 14, 672, "EfficientNetB0 block5b_se_squeeze"),
    (1, 7, 1280, "MobileNetV2 / EfficientNetB0 global pool"),
    (32, 7, 1280, "the same at batch 32"),
    (32, 14, 672, "block5b_se_squeeze at batch 32"),
]


# the function each kind's kernel comes from (``--before`` swaps in its version of it)
KERNELS = {"mean": "_reduce_keep_inner_wide", "max": "_reduce_keep_inner"}


def _graph(batch: int, side: int, channels: int, name: str, kind: str = "mean") -> Graph:
    g = Graph(name)
    x = g.add_input("x", TensorType("float32", (batch, side, side, channels)))
    g.set_outputs([OpBuilder(g).emit(f"reduce_{kind}", x, axes=(1, 2))])
    return g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="commit whose _reduce_keep_inner_wide is 'before'")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--kind", choices=sorted(KERNELS), default="mean",
                    help="mean (a global average pool) or max (a global max pool: float32, in the kept row)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for batch, side, channels, source in SHAPES:
            x = rng.standard_normal((batch, side, side, channels)).astype(np.float32)
            name = f"{args.kind}_{batch}_{side}_{channels}"
            after, inst_after = _library_call(_graph(batch, side, channels, name, args.kind), [x], threads)
            with function_of(args.before, reduce_kernels, KERNELS[args.kind]):  # named apart: loaded once
                before, inst_before = _library_call(_graph(batch, side, channels, f"{name}_before", args.kind), [x],
                                                    threads)
            y = after()[0]
            np.testing.assert_allclose(y, before()[0], rtol=2e-7, atol=1e-9, err_msg=name)
            b, a = time_pair(before, after, args.repeat)
            gbs = x.nbytes / (a * 1e-3) / 1e9
            parts = reduce_kernels.reduce_parts(side * side, side * side) if args.kind == "mean" else 1
            lines.append(f"| {batch} x {side} x {side} x {channels} | {source} | {threads} | {parts} | "
                         f"{b * 1e3:.1f} | {a * 1e3:.1f} | {b / a:.2f} | {gbs:.0f} |")
            print(lines[-1], flush=True)
            inst_after.close()
            inst_before.close()
    pool = "average" if args.kind == "mean" else "max"
    write_table(args.out, "reduce_parts", f"Global {pool} pooling: {args.before} against today",
                f"`python -m benchmarks.reduce_parts --kind {args.kind} --before {args.before}`; outputs equal to "
                "float32 rounding.",
                ["input", "from", "threads", "parts", "before µs", "after µs", "speed-up", "after GB/s"], 2,
                lines, args.repeat, threads=f"{args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
