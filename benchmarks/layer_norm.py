"""Layer normalization in native code: the rows kernel against the formula's four launches.

::

    python -m benchmarks.layer_norm                       # ConvNeXtTiny's, BERT-base's and odd rows
    python -m benchmarks.layer_norm --shapes 128x768 --repeat 15

Each case is a graph of one ``layer_norm`` over the last axis of a (rows, length) float32 input with
random gamma and beta, compiled twice: as it runs today (``kernels/layer_norm``: one launch, each row
read three times while it is in cache) and as its formula (mean, centered tensor, mean square,
normalization: the lowering that axes other than the trailing ones still take), the build cache
bypassed. Both libraries run in this one process on one thread, timed interleaved
(``graphc.bench.measure``, medians); the largest absolute error of each against float64 NumPy is
printed beside. Writes ``benchmarks/results/<date>-layer_norm.md``.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.kernel_ab import time_pair, write_table
from benchmarks.vector_math import _library_call
from graphc.backends.llvm.kernels import layer_norm as layer_norm_kernel
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder

# ConvNeXtTiny's four stages at 224x224 (pixels x channels), BERT-base's 128 tokens, odd sizes
SHAPES = "3136x96,784x192,196x384,49x768,128x768,1x768,33x17"
EPSILON = 1e-6


@contextmanager
def _as_formula():
    """Kernels compiled inside lower layer_norm as its formula."""
    saved = layer_norm_kernel.applies
    layer_norm_kernel.applies = lambda x, axes: False
    try:
        yield
    finally:
        layer_norm_kernel.applies = saved


def _graph(rows: int, length: int, name: str, rng: np.random.Generator) -> Graph:
    g = Graph(name)
    x = g.add_input("x", TensorType("float32", (rows, length)))
    gamma = g.add_constant("gamma", rng.uniform(0.5, 1.5, length).astype(np.float32))
    beta = g.add_constant("beta", rng.standard_normal(length).astype(np.float32))
    g.set_outputs([OpBuilder(g).emit("layer_norm", x, gamma, beta, axes=(-1,), epsilon=EPSILON)])
    return g


def _exact(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    c = x - x.mean(axis=-1, keepdims=True)
    return c / np.sqrt((c * c).mean(axis=-1, keepdims=True) + EPSILON) * gamma + beta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="ROWSxLENGTH, comma-separated")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    lines = []
    for shape in args.shapes.split(","):
        rows, length = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((rows, length)) * 2 + 0.5).astype(np.float32)
        graph = _graph(rows, length, f"layer_norm_{rows}x{length}", np.random.default_rng(1))
        after, inst_after = _library_call(graph, [x])
        with _as_formula():  # its own name: a library of the same path is the one loaded
            before, inst_before = _library_call(_graph(rows, length, f"layer_norm_{rows}x{length}_formula",
                                                       np.random.default_rng(1)), [x])
        gamma, beta = (graph.constants[n] for n in ("gamma", "beta"))
        exact = _exact(x, gamma, beta)
        errors = [float(np.max(np.abs(call()[0] - exact))) for call in (before, after)]
        b, a = time_pair(before, after, args.repeat, ("formula", "rows"))
        lines.append(f"| {rows} x {length} | {b * 1e3:.1f} | {a * 1e3:.1f} | {b / a:.2f} | "
                     f"{errors[0]:.1e} | {errors[1]:.1e} |")
        print(lines[-1], flush=True)
        inst_after.close()
        inst_before.close()
    write_table(args.out, "layer_norm", "Layer normalization: the rows kernel against the formula",
                "`python -m benchmarks.layer_norm`; errors: largest |graphc - float64 NumPy|.",
                ["input (rows x length)", "formula µs", "rows µs", "speed-up", "formula max err", "rows max err"], 1,
                lines, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
