"""Matmuls whose right operand is computed at run time: graphc native before and after, onnxruntime.

::

    python -m benchmarks.matmul_runtime                  # before = the row kernel of commit BEFORE
    python -m benchmarks.matmul_runtime --before none    # only the current kernel and onnxruntime

Each case is a graph of one ``matmul`` (or a softmax) with both operands as inputs: a plain
(M, K) @ (K, N), attention's batched Q·Kᵀ and P·V, the backward products of a Dense layer. The
"before" library is compiled from the same graph with the lowering of ``--before`` (its
``gemm.py`` read from git and swapped in while compiling, the build cache bypassed), so both
kernels and onnxruntime are timed interleaved in this one process (``graphc.bench.measure``,
medians, one thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graphc.backends.llvm import compile_library
from graphc.backends.llvm.kernels import gemm
from graphc.backends.onnx.export import export_graph
from graphc.bench import _ort_session, _Runner, measure
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "0225019"  # the last commit with the one-accumulator row kernel for run-time operands

CASES = [  # (label, op, shape of a, shape of b or None)
    ("(128,256)@(256,768)", "matmul", (128, 256), (256, 768)),
    ("QK^T (1,8,128,32)@(1,8,32,128)", "matmul", (1, 8, 128, 32), (1, 8, 32, 128)),
    ("PV (1,8,128,128)@(1,8,128,32)", "matmul", (1, 8, 128, 128), (1, 8, 128, 32)),
    ("(64,32)@(32,256)", "matmul", (64, 32), (32, 256)),
    ("(32,256)@(256,64)", "matmul", (32, 256), (256, 64)),
    ("(1,17)@(17,33)", "matmul", (1, 17), (17, 33)),
    ("softmax (1,8,128,128)", "softmax", (1, 8, 128, 128), None),
]


def _graph(op: str, sa: tuple, sb: tuple | None, name: str) -> Graph:
    g = Graph(name)
    x = g.add_input("a", TensorType("float32", sa))
    if sb is None:
        out = OpBuilder(g).emit(op, x, axis=-1)
    else:
        y = g.add_input("b", TensorType("float32", sb))
        out = OpBuilder(g).emit(op, x, y)
    g.set_outputs([out])
    return g


@contextmanager
def _old_lowering(commit: str):
    """``gemm.emit_runtime_gemm`` replaced by the run-time-operand kernel of ``commit``."""
    source = subprocess.run(["git", "show", f"{commit}:graphc/backends/llvm/kernels/gemm.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm_before.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("gemm_before", path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    saved = gemm.emit_runtime_gemm
    gemm.emit_runtime_gemm = old._matmul_generic
    try:
        yield
    finally:
        gemm.emit_runtime_gemm = saved


def _native_call(graph: Graph, feeds: list[np.ndarray], *, cache: bool):
    files = compile_library(graph, cache=cache)
    lib = Library(files.shared, files.symbol)
    inst = lib.instance(1)
    return (lambda: inst.run(feeds)), inst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="commit whose run-time matmul kernel is 'before' (or none)")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for label, op, sa, sb in CASES:
        graph = _graph(op, sa, sb, f"bench_{op}")
        feeds = [rng.standard_normal(sa).astype(np.float32)] + \
            ([rng.standard_normal(sb).astype(np.float32)] if sb is not None else [])
        after, inst_after = _native_call(graph, feeds, cache=False)
        runners = [_Runner("after", after)]
        instances = [inst_after]
        if args.before != "none" and op == "matmul":
            with _old_lowering(args.before):
                # its own name: a library of the same path would be the one already loaded
                before, inst_before = _native_call(_graph(op, sa, sb, f"bench_{op}_before"), feeds, cache=False)
            runners.insert(0, _Runner("before", before))
            instances.append(inst_before)
            np.testing.assert_allclose(after()[0], before()[0], rtol=1e-4, atol=1e-4 * float(np.abs(before()[0]).max()))
        sess = _ort_session(export_graph(graph), 1)
        names = [i.name for i in sess.get_inputs()]
        ort_feeds = dict(zip(names, feeds))
        runners.append(_Runner("onnxruntime", lambda s=sess, f=ort_feeds: s.run(None, f)))
        res = measure(runners, args.repeat)
        rows.append((label, *(res[n].median_ms if n in res else None for n in ("before", "after", "onnxruntime"))))
        for inst in instances:
            inst.close()

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    print("| case | before ms | after ms | onnxruntime ms | before/after | ort/after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, bef, aft, ort in rows:
        speed = f"{bef / aft:.2f}" if bef and aft else "-"
        vs = f"{ort / aft:.2f}" if ort and aft else "-"
        print(f"| {label} | {fmt(bef)} | {fmt(aft)} | {fmt(ort)} | {speed} | {vs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
