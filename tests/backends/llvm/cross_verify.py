"""Every seed model built for every platform graphc targets, run there and compared with the reference.

One library per model and target; x86-64 libraries run on this machine (the AVX-512 one only where
the CPU has AVX-512), aarch64 under qemu-aarch64 and wasm32 under wasmtime
(tests/backends/llvm/emulation.py). Each is compared with graphc's reference interpreter on the
unoptimized graph, so the optimizer and every target's kernels are checked at once. The tests
(test_cross_seed_models.py) use :func:`verify`; run as a program it prints the README's table of
results and code sizes::

    KERAS_BACKEND=torch python -m tests.backends.llvm.cross_verify [MODEL ...]

Emulated runs use small batches: time under emulation says nothing about the real machine.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np

import graphc
from graphc import examples
from graphc.backends.llvm import compile_library
from graphc.backends.llvm.native import LibraryFiles
from graphc.backends.llvm.target import TargetInfo, resolve_target
from graphc.ir.graph import Graph
from graphc.runtime import Library
from tests.backends.llvm.emulation import EmulatedLibrary, missing_tools
from tests.backends.llvm.helpers import host_lacks

RTOL = 1e-5  # and an absolute tolerance of RTOL times the output's largest magnitude


@dataclass(frozen=True)
class CrossTarget:
    """A platform and CPU to verify on, and how its libraries run here."""

    label: str
    triple: str
    cpu: str | None
    emulated: bool

    @property
    def info(self) -> TargetInfo:
        return resolve_target(self.triple, self.cpu)


TARGETS = {
    "x86-64-v4": CrossTarget("x86-64-v4 (AVX-512)", "x86_64-linux-gnu", "x86-64-v4", False),
    "x86-64-v3": CrossTarget("x86-64-v3 (AVX2)", "x86_64-linux-gnu", "x86-64-v3", False),
    "aarch64": CrossTarget("aarch64 (NEON, qemu)", "aarch64-linux-gnu", "cortex-a72", True),
    "wasm32": CrossTarget("wasm32 (SIMD128, wasmtime)", "wasm32-wasi", None, True),
}
# Samples per run: small under emulation, where the Xception pair costs most.
BATCH = {"stereo_xception": 1, "inception": 1}
DEFAULT_BATCH = 2


@dataclass
class Verified:
    """One model on one target: its largest error relative to the output's scale and its code size."""

    model: str
    target: str
    error: float
    object_bytes: int
    library_bytes: int
    seconds: float
    library: Path

    @property
    def passed(self) -> bool:
        return self.error <= RTOL


def unavailable(target: CrossTarget) -> str | None:
    """Why this machine cannot build and run ``target``'s libraries; None when it can."""
    if target.emulated:
        return missing_tools(target.triple)
    if llvm.get_process_triple().split("-", 1)[0] != "x86_64":
        return f"{target.label} libraries run on x86-64 machines only"
    lacking = host_lacks(target.info)
    return f"this CPU lacks {', '.join(lacking)} for {target.label}" if lacking else None


@dataclass
class SeedCase:
    """A seed model lowered once, its inputs and the reference's outputs, shared by every target."""

    name: str
    graph: Graph
    feeds: dict[str, np.ndarray]
    expected: list[np.ndarray]


@cache
def seed_case(name: str) -> SeedCase:
    model = examples.build(name, seed=11)
    reference = graphc.build(model, level=0)
    graph = graphc.optimize(reference.graph, 2)
    raw = reference.feeds(examples.inputs(name, np.random.default_rng(11), BATCH.get(name, DEFAULT_BATCH)))
    feeds = {n: np.ascontiguousarray(raw[n], dtype=graph.type_of(n).dtype) for n in graph.inputs}
    out = reference.run(feeds)
    return SeedCase(name, graph, feeds, [np.asarray(out[k]) for k in reference.graph.outputs])


def build(case: SeedCase, target: CrossTarget) -> LibraryFiles:
    return compile_library(case.graph, case.name, triple=target.triple, cpu=target.cpu)


def run(files: LibraryFiles, case: SeedCase, target: CrossTarget) -> list[np.ndarray]:
    arrays = [case.feeds[n] for n in case.graph.inputs]
    if target.emulated:
        return EmulatedLibrary(files, case.graph, target.triple).instance().run(arrays)
    inst = Library(files.shared, files.symbol).instance(1)
    try:
        return inst.run(arrays)
    finally:
        inst.close()


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """max |got - want| / (|want| + max |want|) over every output: 0 when equal, inf on a shape mismatch."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape or g.dtype != w.dtype:
            return float("inf")
        w64, g64 = w.astype(np.float64), g.astype(np.float64)
        scale = float(np.max(np.abs(w64))) if w.size else 1.0
        if w.size:
            worst = max(worst, float(np.max(np.abs(g64 - w64) / (np.abs(w64) + scale + 1e-30))))
    return worst


def verify(name: str, target: CrossTarget) -> Verified:
    case = seed_case(name)
    start = time.perf_counter()
    files = build(case, target)
    error = relative_error(run(files, case, target), case.expected)
    return Verified(name, target.label, error, files.stats["object_bytes"], files.shared.stat().st_size,
                    time.perf_counter() - start, files.shared)


def vector_registers_used(library: Path) -> set[str]:
    """The x86 vector register files (xmm, ymm, zmm) the machine code of ``library`` names."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout
    return {kind for kind in ("xmm", "ymm", "zmm") if f"%{kind}" in text}


def table(results: list[Verified], targets: list[CrossTarget]) -> str:
    """Markdown: one row per model, per target the error against the reference and the code size."""
    head = "| model | " + " | ".join(t.label for t in targets) + " |"
    lines = [head, "|---|" + "---:|" * len(targets)]
    by = {(r.model, r.target): r for r in results}
    for name in dict.fromkeys(r.model for r in results):
        cells = []
        for t in targets:
            r = by.get((name, t.label))
            cells.append("not run" if r is None else
                         f"{'ok' if r.passed else 'FAIL'} {r.error:.0e}, {r.object_bytes / 1024:.0f} kB")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=examples.names())
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    args = p.parse_args(argv)
    targets = [TARGETS[t] for t in args.targets.split(",")]
    for t in targets:
        reason = unavailable(t)
        if reason:
            raise SystemExit(f"cannot verify {t.label}: {reason}")
    results = []
    for name in args.models:
        for t in targets:
            r = verify(name, t)
            print(f"{name:18s} {t.label:28s} error {r.error:.1e} code {r.object_bytes / 1024:6.0f} kB "
                  f"library {r.library_bytes / 1024:7.0f} kB  {r.seconds:6.1f} s", flush=True)
            results.append(r)
    print()
    print(table(results, targets))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
