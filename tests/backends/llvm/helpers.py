"""Helpers for native-backend tests: compile a graph, run it through the C ABI, compare."""

from __future__ import annotations

import numpy as np

from graphc.backends.llvm import compile_library
from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir.graph import Graph
from graphc.runtime import Library


def load(graph: Graph, name: str | None = None, **kw) -> Library:
    """The graph's library, loaded; with $GRAPHC_TEST_TRIPLE, built for that platform and run under
    its emulator (tests/backends/llvm/emulation.py)."""
    from tests.backends.llvm.emulation import EmulatedLibrary, requested_triple, require_emulation

    triple = requested_triple()
    if triple is not None:
        require_emulation(triple)
        return EmulatedLibrary(compile_library(graph, name, triple=triple, **kw), graph, triple)
    if kw.get("cpu") is not None:
        skip_unless_host_runs(kw["cpu"])
    files = compile_library(graph, name, **kw)
    return Library(files.shared, files.symbol)


def host_lacks(target) -> list[str]:
    """The instruction set features code for ``target`` (a TargetInfo) may use and this CPU lacks, sorted."""
    from graphc.backends.llvm.target import host_target

    return sorted(target.feature_set - host_target("host").feature_set)  # the CPU itself, whatever GRAPHC_NATIVE_CPU


def skip_unless_host_runs(cpu: str) -> None:
    """Skip the test where code for ``cpu`` uses an instruction set feature this CPU lacks (AVX-512 code on
    an AVX2 machine), before building it: the runtime would refuse its instances by name."""
    import pytest

    from graphc.backends.llvm.target import host_target

    missing = host_lacks(host_target(cpu))
    if missing:
        pytest.skip(f"code for {cpu} needs {', '.join(missing[:4])}, which this CPU lacks")


def run_native(lib: Library, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """The outputs (in the graph's output order) of one run on a fresh instance."""
    inst = lib.instance(threads)
    try:
        names = [i.name for i in lib.inputs]
        return inst.run([np.ascontiguousarray(feeds[n]) for n in names])
    finally:
        inst.close()


def assert_matches_reference(graph: Graph, lib: Library, feeds: dict[str, np.ndarray], *, rtol=1e-4, atol=1e-5,
                             threads: int = 1, label: str = "") -> None:
    want = reference_run(graph, feeds)
    got = run_native(lib, feeds, threads)
    for name, g in zip(graph.outputs, got):
        w = np.asarray(want[name])
        assert g.shape == w.shape, f"{label} {name}: shape {g.shape} != reference {w.shape}"
        assert g.dtype == w.dtype, f"{label} {name}: dtype {g.dtype} != reference {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{label} output {name!r}")


def check_model(model, shape, rng, *, threads=(1, 2), batches=(1, 3)):
    """A Model's native outputs equal the reference's on standard normal inputs of ``(batch, *shape)``,
    for each thread count and batch (one build per thread count); returns the build of the last one."""
    import graphc

    ref = graphc.build(model, "reference")
    cm = None
    for t in threads:
        cm = graphc.build(model, "native", threads=t)
        for n in batches:
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            got, want = cm.predict(x), ref.predict(x)
            for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-5, err_msg=f"{t} threads, batch {n}")
    return cm
