"""A library records the CPU its code was generated for and the instruction set features that code may
use; the runtime refuses an instance on a CPU without them, naming what is missing, before any of
that code runs (graphc/c_runtime/src/cpu_features.c). Without the check, AVX-512 code on an AVX2
machine dies on an illegal instruction inside a kernel."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm import compile_library
from graphc.backends.llvm.target import host_platform, host_target, resolve_target
from graphc.runtime import Library, NativeError
from tests.runtime.conftest import abi_graph, abi_inputs

HIDE = "GRAPHC_HIDE_CPU_FEATURES"
GC_FAILED_PRECONDITION = 3


def _load(cpu: str | None) -> Library:
    files = compile_library(abi_graph(f"abi_{(cpu or 'host').replace('-', '_')}"), cpu=cpu)
    return Library(files.shared, files.symbol)


def _runs(lib: Library) -> None:
    ids, x = abi_inputs(3, 5)
    y, _ = lib.instance(threads=1).run([ids, x])
    assert y.shape == (3, 4) and np.isfinite(y).all()


def test_a_library_names_its_cpu_and_features():
    lib, target = _load(None), host_target()
    assert lib.target_cpu == target.cpu
    recorded = lib.target_features.split(",") if lib.target_features else []
    assert all(f.startswith("+") for f in recorded)
    assert {f[1:] for f in recorded} == target.feature_set
    assert lib.describe()["target"] == {"cpu": target.cpu, "features": lib.target_features}


def test_a_hidden_feature_the_code_uses_refuses_the_instance(monkeypatch):
    lib = _load(None)
    used = [f for f in ("avx2", "fma", "sse4.2", "neon") if f in host_target().feature_set]
    if not used:
        pytest.skip(f"the host target {host_target().cpu!r} uses none of avx2, fma, sse4.2, neon")
    monkeypatch.setenv(HIDE, f"nosuchfeature, {used[0]}")
    with pytest.raises(NativeError) as err:
        lib.instance(threads=1)
    assert err.value.code == GC_FAILED_PRECONDITION
    message = str(err.value)
    assert f"compiled for CPU '{host_target().cpu}'" in message and f"lacks ({used[0]})" in message
    monkeypatch.delenv(HIDE)
    _runs(lib)  # the same library, once the feature is back


@pytest.mark.skipif(host_platform() != "x86_64-linux-gnu", reason="x86-64's base (SSE2) has no named features")
def test_a_library_for_the_base_architecture_runs_whatever_is_hidden(monkeypatch):
    """``generic`` x86-64 code assumes nothing beyond SSE2, so no hidden feature stops it."""
    lib = _load("generic")
    assert lib.target_features == resolve_target(cpu="generic").features == ""
    monkeypatch.setenv(HIDE, ",".join(sorted(host_target().feature_set)))
    _runs(lib)


@pytest.mark.skipif(host_platform() != "x86_64-linux-gnu", reason="x86-64 levels are built on x86-64 hosts")
def test_avx512_code_is_refused_on_a_cpu_without_avx512(monkeypatch):
    """Real where the host lacks AVX-512; on an AVX-512 host the feature is hidden to stand for that CPU."""
    lib = _load("x86-64-v4")
    assert {"+avx512f", "+avx512bw", "+avx512vl"} <= set(lib.target_features.split(","))
    if "avx512f" in host_target().feature_set:
        monkeypatch.setenv(HIDE, "avx512f")
    with pytest.raises(NativeError, match=r"compiled for CPU 'x86-64-v4', whose instructions this CPU lacks "
                                          r"\([a-z0-9, ]*avx512f"):
        lib.instance(threads=1)


@pytest.mark.skipif(host_platform() != "x86_64-linux-gnu", reason="x86-64 levels are built on x86-64 hosts")
def test_avx2_code_runs_where_the_cpu_has_avx2():
    if not {"avx2", "fma"} <= host_target().feature_set:
        pytest.skip("the host has no AVX2 and FMA")
    _runs(_load("x86-64-v3"))


def test_aarch64_code_for_a_newer_core_is_refused_on_an_older_one(monkeypatch):
    """Neoverse-N1 code (dot products, LSE atomics, fp16) under qemu emulating a Cortex-A72, which has
    none of them: the runner's gc_instance_create fails naming them, read from the kernel's hardware
    capabilities; under qemu's default CPU (which has them) the same program runs."""
    from tests.backends.llvm.emulation import EmulatedLibrary, require_emulation, run_program

    require_emulation("aarch64-linux-gnu")
    graph = abi_graph("abi_n1")
    lib = EmulatedLibrary(compile_library(graph, triple="aarch64-linux-gnu", cpu="neoverse-n1"), graph,
                          "aarch64-linux-gnu")
    inst = lib.instance(threads=1)
    y, _ = inst.run(abi_inputs(3, 5))
    assert y.shape == (3, 4)
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    proc = run_program("aarch64-linux-gnu", lib.runner, ["inputs.bin", "outputs.bin", "1"], lib.workdir)
    assert proc.returncode != 0
    assert "compiled for CPU 'neoverse-n1', whose instructions this CPU lacks" in proc.stderr
    for feature in ("lse", "fullfp16", "rcpc", "dotprod"):
        assert feature in proc.stderr.split("lacks (", 1)[1].split(")", 1)[0], proc.stderr
