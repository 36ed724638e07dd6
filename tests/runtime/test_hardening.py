"""The C runtime off the well-behaved path (tests/runtime/c/test_hardening.c): failing allocations
under AddressSanitizer, one instance shared by two threads (also under ThreadSanitizer), handles
used after release, absurd thread counts, corrupted weights files."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphc.backends.llvm import export_files
from graphc.backends.llvm.codegen import weights_blob, weights_layout
from graphc.backends.llvm.native import write_weights_file
from graphc.backends.llvm.toolchain import runtime_dir
from tests.runtime.conftest import abi_graph
from tests.runtime.test_c_abi import TESTS, cc, run

SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
ASAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """abi_model's own weights as a weights file (what export_library(weights="external") writes)."""
    graph = abi_graph()
    entries, total, digest = weights_layout(graph)
    path = tmp_path_factory.mktemp("weights") / "abi_model.weights"
    write_weights_file(path, digest, weights_blob(graph, entries, total))
    return path


@pytest.fixture(scope="module")
def plain(abi_library, tmp_path_factory) -> Path:
    """test_hardening linked with the exported static library, as a user's program would be."""
    out = tmp_path_factory.mktemp("hardening")
    export_files(abi_library, out)
    cc(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{out}", str(TESTS / "test_hardening.c"),
        str(out / "libabi_model.a"), "-lpthread", "-lm", "-o", "test_hardening"], out)
    return out / "test_hardening"


def _from_sources(abi_library, directory: Path, flags: list[str], name: str) -> Path:
    """test_hardening with the runtime compiled from source with ``flags`` (sanitizers)."""
    rt = runtime_dir()
    code = abi_library.objects["model"].parent
    sources = [str(p) for p in sorted((rt / "src").glob("*.c"))] + [str(code / "abi_model_model.c")]
    cc(["-std=c11", "-D_GNU_SOURCE", *flags, f"-I{rt / 'include'}", f"-I{rt / 'src'}", f"-I{abi_library.directory}",
        str(TESTS / "test_hardening.c"), *sources, str(abi_library.objects["model"]),
        str(abi_library.objects["weights"]), "-lpthread", "-lm", "-o", name], directory)
    return directory / name


@pytest.fixture(scope="module")
def sanitized(abi_library, tmp_path_factory) -> Path:
    return _from_sources(abi_library, tmp_path_factory.mktemp("asan"), SANITIZE, "test_hardening_asan")


def test_every_failing_allocation_is_a_clean_error_without_leaks(sanitized, weights_file):
    """Defect: a failure part-way through gc_instance_create freed uninitialised pointers."""
    out = run(sanitized, "alloc", str(weights_file), env=ASAN_ENV)
    assert out.startswith("ok"), out


def test_an_instance_shared_by_two_threads_refuses_the_second_caller(plain):
    """Defect: concurrent calls on one instance corrupted results (or double-freed in the planner)."""
    assert run(plain, "shared", "20000").startswith("ok")


def test_sharing_is_detected_without_data_races(abi_library, tmp_path):
    exe = _from_sources(abi_library, tmp_path, ["-O1", "-g", "-fsanitize=thread"], "test_hardening_tsan")
    assert run(exe, "shared", "2000", env={"TSAN_OPTIONS": "halt_on_error=1"}).startswith("ok")


def test_a_released_handle_is_reported_as_released(plain):
    """Defect: free() overwrote the instance's tag, so "was released" was never reported."""
    assert run(plain, "released").startswith("ok")


def test_thread_counts_beyond_the_limit_are_clamped_to_it(plain):
    """Defect: any num_threads up to 1024 started that many threads."""
    assert run(plain, "threads").startswith("ok")


def test_corrupted_weights_files_are_refused(plain, weights_file):
    """Defect: weights files had no checksum, and trailing bytes were ignored."""
    assert run(plain, "weights", str(weights_file)).startswith("ok")


def test_weights_checks_under_the_sanitizers(sanitized, weights_file):
    assert run(sanitized, "weights", str(weights_file), env=ASAN_ENV).startswith("ok")
