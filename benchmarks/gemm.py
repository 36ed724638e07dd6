"""SGEMM against the measured FMA peak: graphc native before and after, and OpenBLAS through NumPy.

::

    python -m benchmarks.gemm                              # before = the GEMM of commit BEFORE
    python -m benchmarks.gemm --before none --sizes 256,1024 --threads 1
    python -m benchmarks.gemm --before 4k-pages            # before = the same library without huge pages

Each case is ``M = N = K`` in float32, as two graphs of one ``matmul``: a Dense layer's product
(the right operand a weight, packed once when the instance is made) and a product of two
run-time operands (attention, backward passes: both packed on every call). The "before"
libraries are compiled from the same graphs with the ``gemm.py`` of ``--before`` read from git
and swapped in while compiling (the build cache bypassed), so before, after and OpenBLAS
(``np.matmul`` into a preallocated output, its thread count set through the library) are timed
interleaved in one process, twice: wall time (``graphc.bench.measure``, medians) and CPU time
per call (medians; on a machine shared with other work, the CPU time is what the kernel costs
and the wall time depends on the neighbours). Each figure is given in GFLOP/s and as a share of
the peak ``graphc bench --peak`` measures for that many threads. ``--before 4k-pages`` times, as
"before", an instance of the same library made with ``huge_pages=False`` (its packed B and arena
in 4 KiB pages; see ``gc_options_t.huge_pages``).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graphc.backends.llvm import compile_library
from graphc.backends.llvm.kernels import gemm
from graphc.bench import _Runner, measure
from graphc.bench.peak import measure_peak
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "f387942"  # the last commit whose GEMM packs B only, with MC/KC fixed


def _graph(m: int, kind: str, name: str, weight: np.ndarray) -> Graph:
    g = Graph(name)
    x = g.add_input("a", TensorType("float32", (m, weight.shape[0])))
    if kind == "dense":
        y = g.add_constant("w", weight)
    else:
        y = g.add_input("b", TensorType("float32", weight.shape))
    g.set_outputs([OpBuilder(g).emit("matmul", x, y)])
    return g


@contextmanager
def _old_lowering(commit: str):
    """``gemm.emit_matmul`` and ``gemm.emit_gemm`` replaced by those of ``commit`` (with their whole module,
    and the block sizes of that commit's ``gemm_blocking``, where it has one, imported while it loads)."""
    blocking_name = "graphc.backends.llvm.kernels.gemm_blocking"

    def load(name: str, path: str, tmp: str):
        source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                                text=True).stdout
        file = Path(tmp) / f"{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        return module

    current_blocking = sys.modules[blocking_name]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            try:
                sys.modules[blocking_name] = load("gemm_blocking_before",
                                                  "graphc/backends/llvm/kernels/gemm_blocking.py", tmp)
            except subprocess.CalledProcessError:  # a commit before the module: its GEMM sized its own blocks
                pass
            old = load("gemm_before", "graphc/backends/llvm/kernels/gemm.py", tmp)
        finally:
            sys.modules[blocking_name] = current_blocking
    # emit_gemm too: a weight's product reaches it through gemm_bf16.gemm_for, which looks it up in this
    # module when called (swapping emit_matmul alone timed the current emit_gemm as "before")
    saved = gemm.emit_matmul, gemm.emit_gemm
    gemm.emit_matmul, gemm.emit_gemm = old.emit_matmul, old.emit_gemm
    try:
        yield
    finally:
        gemm.emit_matmul, gemm.emit_gemm = saved


def _openblas_threads() -> ctypes.CDLL | None:
    """NumPy's OpenBLAS, to set its thread count (None where NumPy uses another BLAS)."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in glob.glob(str(libs / "libscipy_openblas*.so*")):
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            if hasattr(lib, sym):
                return getattr(lib, sym)
    return None


def _library(graph: Graph):
    files = compile_library(graph, cache=False)
    return Library(files.shared, files.symbol)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE,
                    help="commit whose GEMM is 'before' (or none; 4k-pages: this GEMM without huge pages)")
    ap.add_argument("--sizes", default="256,512,1024,2048,4096", help="M = N = K, or MxKxN")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--kinds", default="dense,runtime")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)
    sizes = [tuple(int(d) for d in s.split("x")) if "x" in s else (int(s),) * 3 for s in args.sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    peak = measure_peak()
    fma_loop, fma_flop = _fma_loop(0.01)
    set_blas_threads = _openblas_threads()
    rng = np.random.default_rng(0)
    rows = []
    for m, kk, n in sizes:
        a = rng.standard_normal((m, kk)).astype(np.float32)
        w = rng.standard_normal((kk, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        size = str(m) if m == kk == n else f"{m}x{kk}x{n}"
        want = a.astype(np.float64) @ w.astype(np.float64)
        flop = 2.0 * m * kk * n
        for kind in args.kinds.split(","):
            feeds = [a] if kind == "dense" else [a, w]
            libs = {"after": _library(_graph(m, kind, f"gemm_{kind}_{m}_{kk}_{n}", w))}
            if args.before == "4k-pages":
                libs["before"] = libs["after"]
            elif args.before != "none":
                with _old_lowering(args.before):
                    libs["before"] = _library(_graph(m, kind, f"gemm_{kind}_{m}_{kk}_{n}_before", w))
            for threads in thread_counts:
                runners, instances = [], []
                for label in ("before", "after"):
                    if label not in libs:
                        continue
                    inst = libs[label].instance(threads, huge_pages=not (label == "before" and
                                                                          args.before == "4k-pages"))
                    got = inst.run(feeds)[0]
                    err = float(np.abs(got - want).max() / np.abs(want).max())
                    if err > 1e-5:
                        raise AssertionError(f"{label} {kind} {size}: relative error {err:.2e}")
                    instances.append(inst)
                    runners.append(_Runner(label, lambda i=inst, f=feeds: i.run(f)))
                if set_blas_threads is not None:
                    runners.append(_Runner("openblas", lambda a=a, w=w, c=c: np.matmul(a, w, out=c),
                                           context=lambda t=threads: _blas_threads(set_blas_threads, t)))
                wall = measure(runners, args.repeat, min_sample_s=0.05)
                if threads == 1:  # the FMA loop of the peak, timed beside them
                    runners.append(_Runner("fma", fma_loop))
                cpu = _measure_cpu(runners, args.repeat, threads)
                row = {"n": size, "kind": kind, "threads": threads, "peak": peak.compute_peak(threads),
                       "core_peak": peak.gflops}
                if threads == 1:
                    row["fma_cpu"] = fma_flop / float(np.median(cpu["fma"])) / 1e9
                for label in ("before", "after", "openblas"):
                    if label in wall and wall[label].error is None:
                        row[label] = flop / (wall[label].median_ms * 1e-3) / 1e9
                        row[label + "_cpu"] = flop / float(np.median(cpu[label])) / 1e9
                rows.append(row)
                print(_line(row), flush=True)
                for inst in instances:
                    inst.close()
    print()
    print(f"Peak: {peak.gflops:.0f} GFLOP/s on 1 core ({peak.widest}-bit FMA), {peak.multi_gflops:.0f} on "
          f"{peak.threads}; {peak.cpu}")
    print("GFLOP/s from the median wall time (% of the peak of that many cores) / GFLOP per CPU-second from the")
    print("median CPU time per call, all threads together (% of one core's peak): what the kernel costs on a shared")
    print("machine. Ratios from CPU time.")
    print("FMA loop: the peak's kernel timed by CPU time in the same rounds (1 thread), and 'after' as a share of it.")
    print("| M=N=K | product | threads | before | after | OpenBLAS | after/before | after/OpenBLAS | FMA loop | "
          "after/FMA loop |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(_line(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _fma_loop(seconds: float):
    """The peak's FMA chains at the widest vector width, for about ``seconds``: (call, its FLOPs)."""
    from graphc.backends.llvm.peak_kernels import flops_per_iteration, peak_kernels

    kernels = peak_kernels()
    width = kernels.widths[-1]
    fn = kernels.fma[width]
    t0 = time.perf_counter()
    fn(100_000, 0.9999, 0.001)
    iters = max(100_000, int(100_000 * seconds / max(time.perf_counter() - t0, 1e-7)))
    return (lambda: fn(iters, 0.9999, 0.001)), flops_per_iteration(width) * iters


def _measure_cpu(runners: list[_Runner], repeat: int, threads: int, min_sample_s: float = 0.05) -> dict[str, list]:
    """Seconds of CPU per call, per runner (``repeat`` interleaved samples): the calling thread's
    CPU time on one thread, the whole process's (every thread's, spinning included) on more. On a
    shared machine this is what the kernel itself costs, whatever share of the cores the
    neighbours leave it."""
    clock = time.thread_time if threads == 1 else time.process_time
    samples: dict[str, list] = {r.name: [] for r in runners}
    calls = {}
    for r in runners:
        with r.context():
            r.call()
            t0 = clock()
            r.call()
            calls[r.name] = max(1, int(min_sample_s / max(clock() - t0, 1e-6)))
    for k in range(repeat):
        for r in runners[k % len(runners):] + runners[:k % len(runners)]:
            with r.context():
                r.call()
                t0 = clock()
                for _ in range(calls[r.name]):
                    r.call()
                samples[r.name].append((clock() - t0) / calls[r.name])
    return samples


@contextmanager
def _blas_threads(setter, threads: int):
    setter(threads)
    yield


def _line(row: dict) -> str:
    def cell(label):
        v, cpu, peak, core = row.get(label), row.get(label + "_cpu"), row["peak"], row["core_peak"]
        return "-" if v is None else f"{v:.0f} ({100 * v / peak:.0f} %) / {cpu:.0f} ({100 * cpu / core:.0f} %)"

    def ratio(x, y):
        return f"{row[x + '_cpu'] / row[y + '_cpu']:.2f}" if row.get(x) and row.get(y) else "-"

    fma = row.get("fma_cpu")
    vs_fma = f"{100 * row['after_cpu'] / fma:.0f} %" if fma and row.get("after") else "-"
    return (f"| {row['n']} | {row['kind']} | {row['threads']} | {cell('before')} | {cell('after')} | "
            f"{cell('openblas')} | {ratio('after', 'before')} | {ratio('after', 'openblas')} | "
            f"{f'{fma:.0f}' if fma else '-'} | {vs_fma} |")


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    sys.exit(main())
