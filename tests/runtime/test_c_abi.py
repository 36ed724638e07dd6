"""The C ABI exercised from C: tests/runtime/c/test_abi.c (every error path, descriptions, weights,
use after release), tests/runtime/c/test_threads.c (8 threads with 8 instances), both also built
with AddressSanitizer and UndefinedBehaviorSanitizer over thousands of calls; and the arena
planner on random lifetime tables (tests/runtime/c/test_arena.c)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.llvm import compile_library, export_files
from graphc.backends.llvm.toolchain import find_cc, runtime_dir
from graphc.runtime import Library
from tests.runtime.conftest import abi_graph, abi_inputs

TESTS = Path(__file__).resolve().parent / "c"


def cc(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([find_cc(), *args], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr


def run(exe: Path, *args: str, env: dict | None = None, timeout: int = 300, stdin: str | None = None) -> str:
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, input=stdin,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{exe.name} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def exported(abi_library, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("abi")
    export_files(abi_library, out)
    return out


@pytest.mark.parametrize("program", ["test_abi", "test_threads"])
def test_c_program_against_the_static_library(program, exported):
    cc(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{exported}", str(TESTS / f"{program}.c"),
        str(exported / "libabi_model.a"), "-lpthread", "-lm", "-o", program], exported)
    out = run(exported / program)
    assert out.startswith("ok"), out


def test_c_program_against_the_shared_library(exported):
    cc(["-std=c11", "-O1", f"-I{exported}", str(TESTS / "test_abi.c"), f"-L{exported}", "-labi_model",
        f"-Wl,-rpath,{exported}", "-o", "test_abi_so"], exported)
    assert run(exported / "test_abi_so", "2").startswith("ok")


def test_arena_planner_never_overlaps_live_buffers(tmp_path):
    """tests/runtime/c/test_arena.c: 2000 random lifetime tables, under the sanitizers."""
    rt = runtime_dir()
    cc(["-std=c11", "-D_GNU_SOURCE", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
        f"-I{rt / 'include'}", f"-I{rt / 'src'}", str(TESTS / "test_arena.c"), str(rt / "src" / "arena.c"),
        "-o", "test_arena"], tmp_path)
    assert run(tmp_path / "test_arena") == "ok 2000\n"


def test_arena_planner_is_graphc_memorys_algorithm(tmp_path):
    """The runtime's planner (arena.c) places every buffer where graphc.memory's GreedyBySizeAllocator does
    (greedy by size, the smallest of four orders by best and first fit): one algorithm, so that the plan reported is
    the plan that runs. Random tables with ties in size, lifetime and first use, and zero-size buffers."""
    from graphc.memory.planner import GreedyBySizeAllocator

    rt = runtime_dir()
    cc(["-std=c11", "-D_GNU_SOURCE", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
        f"-I{rt / 'include'}", f"-I{rt / 'src'}", str(TESTS / "test_arena.c"), str(rt / "src" / "arena.c"),
        "-o", "test_arena"], tmp_path)
    rng = np.random.default_rng(5)
    tables = []
    for _ in range(400):
        n, ops = int(rng.integers(0, 60)), int(rng.integers(1, 40))
        first = rng.integers(0, ops, n)
        last = first + rng.integers(0, ops - first + 1) if n else first
        # a few sizes that collide after rounding up to 64 bytes, some zero, some large
        sizes = rng.choice([0, 1, 64, 100, 128, 4096, 4100], n) * rng.choice([1, 1, 3, 1000], n)
        tables.append(list(zip(first.tolist(), last.tolist(), sizes.tolist())))
    stdin = "".join(f"{len(t)}\n" + "".join(f"{f} {la} {s}\n" for f, la, s in t) for t in tables)
    lines = run(tmp_path / "test_arena", "plan", stdin=stdin).splitlines()
    assert len(lines) == len(tables)
    for table, line in zip(tables, lines):
        heap = GreedyBySizeAllocator()
        for f, la, s in table:
            heap.add_buffer(s, f, la)
        arena, *offsets = map(int, line.split())
        assert (arena, offsets) == (heap.arena_bytes(), heap.offsets()), table


def test_pool_runs_every_item_once_and_keeps_blocks_with_their_owner(tmp_path):
    """tests/runtime/c/test_pool.c under ThreadSanitizer: every item once (pools of 2-8 threads, 1-1000
    items), a stalled thread's segment finished by the others, a failure's code returned; and a worker
    starts with a block of its own segment while the caller stalls in its first block (one shared counter
    handed it the caller's next block)."""
    rt = runtime_dir()
    cc(["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-fsanitize=thread", f"-I{rt / 'include'}", f"-I{rt / 'src'}",
        str(TESTS / "test_pool.c"), str(rt / "src" / "threadpool.c"), str(rt / "src" / "status.c"),
        str(rt / "src" / "arena.c"), "-lpthread", "-o", "test_pool"], tmp_path)
    out = run(tmp_path / "test_pool", env={"TSAN_OPTIONS": "halt_on_error=1"})
    assert out == "ok\n", out


def _test_threads_under_tsan(library, tmp_path: Path, *args: str) -> str:
    """tests/runtime/c/test_threads.c with the runtime and ``library``'s model under ThreadSanitizer."""
    rt = runtime_dir()
    code = library.objects["model"].parent
    sources = [str(p) for p in sorted((rt / "src").glob("*.c"))] + [str(code / "abi_model_model.c")]
    cc(["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-fsanitize=thread", f"-I{rt / 'include'}", f"-I{rt / 'src'}",
        f"-I{library.directory}", str(TESTS / "test_threads.c"), *sources, str(library.objects["model"]),
        str(library.objects["weights"]), "-lpthread", "-lm", "-o", "test_threads_tsan"], tmp_path)
    return run(tmp_path / "test_threads_tsan", *args, env={"TSAN_OPTIONS": "halt_on_error=1"})


def test_thread_sanitizer_on_instances_with_their_own_pools(abi_library, tmp_path):
    """8 threads, each with an instance running a 2-thread pool: no data race (ThreadSanitizer)."""
    out = _test_threads_under_tsan(abi_library, tmp_path, "40", "2")
    assert out.startswith("ok 8 threads x 40 rounds, 2 thread(s) per instance"), out


def test_thread_sanitizer_on_sub_batches_at_once(monkeypatch, tmp_path):
    """The model built to run its batch of 4 in sub-batches of one sample, two at a time on each
    instance's two threads, profiled: 8 threads with an instance each, no data race (ThreadSanitizer),
    results equal to one-thread instances' bit for bit."""
    monkeypatch.setenv("GRAPHC_BATCH_SPLIT", "1")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    library = compile_library(abi_graph())
    inst = Library(library.shared, library.symbol).instance(2)
    try:
        inst.run(abi_inputs(4, 6))
        assert (inst.sub_batch, inst.sub_batch_threads) == (1, 2)
    finally:
        inst.close()
    out = _test_threads_under_tsan(library, tmp_path, "20", "2", "profile")
    assert out.startswith("ok 8 threads x 20 rounds, 2 thread(s) per instance, profiled"), out


def test_sanitizers_over_thousands_of_calls(abi_library, tmp_path):
    """The runtime and both C programs built with ASan + UBSan (the model's own kernels are
    LLVM-generated and linked as they are); test_abi's suite repeated: ~20 000 calls, error paths
    included; no leak, no invalid access, no undefined behaviour."""
    flags = ["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-fno-omit-frame-pointer",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    rt = runtime_dir()
    code = abi_library.objects["model"].parent
    objects = [str(abi_library.objects["model"]), str(abi_library.objects["weights"])]
    sources = [str(p) for p in sorted((rt / "src").glob("*.c"))] + [str(code / "abi_model_model.c")]
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    for program, arg in (("test_abi", "300"), ("test_threads", "50")):
        cc([*flags, f"-I{rt / 'include'}", f"-I{rt / 'src'}", f"-I{abi_library.directory}",
            str(TESTS / f"{program}.c"), *sources, *objects, "-lpthread", "-lm", "-o", program], tmp_path)
        out = run(tmp_path / program, arg, env=env)
        assert out.startswith("ok"), out
        if program == "test_abi":
            assert int(out.split()[1]) > 20000
