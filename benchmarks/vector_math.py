"""Elementwise math in native code: the C library lane by lane (before) against the vectorized polynomials.

::

    python -m benchmarks.vector_math                      # before = the math of commit BEFORE
    python -m benchmarks.vector_math --ops log,pow,gelu --n 1048576 --repeat 15

Each case is a graph of one op on ``--n`` float32 elements (a binary ``pow`` gets two such
inputs), compiled twice: with today's ``VMath`` and with the ``VMath`` and ``mathlib`` of
``--before`` (read from git and swapped in while compiling, the build cache bypassed). Both
libraries run in this one process on one thread, timed interleaved (``graphc.bench.measure``,
medians). Each row gives elements per second and the largest error, in float32 ulps of the
float64 result, of each library's outputs on the benchmark's inputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graphc.backends.llvm import builder, compile_library
from graphc.bench import _Runner, measure
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "61828ff"  # the last commit whose log, log1p, erf and pow called the C library per lane

_erf = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


# op: (inputs drawn from rng for n elements, exact float64 result)
CASES = {
    "log": (lambda rng, n: [np.exp(rng.standard_normal(n) * 4)], np.log),
    "pow": (lambda rng, n: [rng.uniform(0.01, 10, n), rng.uniform(-8, 8, n)], np.power),
    "gelu": (lambda rng, n: [rng.standard_normal(n) * 3],
             lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2.0)).astype(np.float64))),
    "softplus": (lambda rng, n: [rng.standard_normal(n) * 3], lambda x: np.logaddexp(0.0, x)),
    "mish": (lambda rng, n: [rng.standard_normal(n) * 3], lambda x: x * np.tanh(np.logaddexp(0.0, x))),
    "exp": (lambda rng, n: [rng.standard_normal(n) * 10], np.exp),
    "tanh": (lambda rng, n: [rng.standard_normal(n) * 2], np.tanh),
    "sigmoid": (lambda rng, n: [rng.standard_normal(n) * 4], _sigmoid),
    "silu": (lambda rng, n: [rng.standard_normal(n) * 4], lambda x: x * _sigmoid(x)),
}


def _graph(op: str, n: int, name: str) -> Graph:
    g = Graph(name)
    xs = [g.add_input(f"x{i}", TensorType("float32", (n,))) for i in range(2 if op == "pow" else 1)]
    g.set_outputs([OpBuilder(g).emit(op, *xs)])
    return g


def _module_from_git(commit: str, path: str, name: str, tmp: Path) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    file = tmp / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def _math_of(commit: str):
    """Kernels compiled inside get the ``VMath`` (and the ``mathlib`` under it) of ``commit``."""
    with tempfile.TemporaryDirectory() as tmp:
        old_mathlib = _module_from_git(commit, "graphc/backends/llvm/mathlib.py", "mathlib_before", Path(tmp))
        old_vmath = _module_from_git(commit, "graphc/backends/llvm/vmath.py", "vmath_before", Path(tmp))
    old_vmath.mathlib = old_mathlib
    saved = builder.VMath
    before = old_vmath.VMath
    if not hasattr(before, "silu"):  # silu was lowered as x * sigmoid(x) before VMath had it
        before = type("VMath", (before,), {"silu": lambda self, x: self.mul(x, self.sigmoid(x))})
    builder.VMath = before
    try:
        yield
    finally:
        builder.VMath = saved


def _max_ulp(got: np.ndarray, exact: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(exact), np.finfo(np.float32).tiny))) - 23)
        err = np.abs(got.astype(np.float64) - exact) / ulp
    same = (np.isnan(got) & np.isnan(exact)) | (np.isinf(got) & (got == exact.astype(np.float32)))
    return float(np.max(np.where(same, 0.0, err)))


def _library_call(graph: Graph, feeds: list[np.ndarray], threads: int = 1):
    files = compile_library(graph, cache=False)
    inst = Library(files.shared, files.symbol).instance(threads)
    return (lambda: inst.run(feeds)), inst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="commit whose VMath and mathlib are 'before'")
    ap.add_argument("--ops", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--n", type=int, default=1 << 20, help="elements per call")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for op in args.ops.split(","):
        draw, exact_fn = CASES[op]
        feeds = [a.astype(np.float32) for a in draw(rng, args.n)]
        after, inst_after = _library_call(_graph(op, args.n, f"vmath_{op}"), feeds)
        with _math_of(args.before):  # its own name: a library of the same path would be the one already loaded
            before, inst_before = _library_call(_graph(op, args.n, f"vmath_{op}_before"), feeds)
        with np.errstate(all="ignore"):
            exact = exact_fn(*[f.astype(np.float64) for f in feeds])
        ulps = [_max_ulp(call()[0], exact) for call in (before, after)]
        res = measure([_Runner("before", before), _Runner("after", after)], args.repeat)
        rows.append((op, res["before"].median_ms, res["after"].median_ms, *ulps))
        inst_after.close()
        inst_before.close()

    print(f"{args.n} float32 elements, 1 thread, median of {args.repeat} rounds")
    print("| op | before Melem/s | after Melem/s | speed-up | before max ulp | after max ulp |")
    print("| --- | --- | --- | --- | --- | --- |")
    for op, bef, aft, ulp_before, ulp_after in rows:
        print(f"| {op} | {args.n / bef / 1e3:.0f} | {args.n / aft / 1e3:.0f} | {bef / aft:.2f} | "
              f"{ulp_before:.2f} | {ulp_after:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
