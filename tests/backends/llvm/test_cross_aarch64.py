"""Cross-compiling for aarch64: the target description, the toolchain, reproducible artifacts, and
examples/embed_c built against cross-compiled seed models and run under qemu-aarch64, printing what
this machine's own native library computes.

The tests that build aarch64 programs need ``gcc-aarch64-linux-gnu`` (and ``qemu-user`` with
``libc6-dev-arm64-cross`` to run them); they skip, saying what is missing, where those are not
installed (CI installs them). The whole native op suite runs under qemu with
``GRAPHC_TEST_TRIPLE=aarch64-linux-gnu`` (see tests/backends/llvm/emulation.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest

import graphc
from graphc import cli, examples
from graphc.backends.llvm import ToolchainError, codegen, compile_library, export_files, toolchain
from graphc.backends.llvm.target import ARCHITECTURES, resolve_target
from graphc.backends.llvm.toolchain import toolchain_for
from tests.backends.llvm.emulation import emulator_command, require_emulation
from tests.backends.llvm.test_embed_c import read_tensors

AARCH64 = "aarch64-linux-gnu"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "embed_c"
ELF_MACHINE = {"aarch64-linux-gnu": 183, "x86_64-linux-gnu": 62}  # e_machine: EM_AARCH64, EM_X86_64


def _require_toolchain(platform: str) -> None:
    try:
        tc = toolchain_for(platform)
        tc.cc()
        tc.ar()
    except ToolchainError as exc:
        pytest.skip(str(exc))


def _elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(head[18:20], "little")


def _export_module():
    spec = importlib.util.spec_from_file_location("embed_export", EXAMPLE / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the target description

@pytest.mark.parametrize("cpu", sorted(ARCHITECTURES[AARCH64].cpus))
def test_aarch64_kernels_get_neon_widths_whatever_the_host(cpu, monkeypatch):
    def no_host(*_):
        raise AssertionError("a cross target must not read the host's CPU")

    monkeypatch.setattr(llvm, "get_host_cpu_name", no_host)
    monkeypatch.setattr(llvm, "get_host_cpu_features", no_host)
    target = resolve_target.__wrapped__(AARCH64, cpu)
    assert (target.triple, target.platform, target.arch) == ("aarch64-unknown-linux-gnu", AARCH64, "aarch64")
    assert (target.vector_bits, target.vw, target.gemm_vw, target.num_vector_registers) == (128, 4, 4, 32)
    assert "+neon" in target.features


@pytest.mark.parametrize(("triple", "cpu", "widest", "absent"), [
    (AARCH64, "cortex-a72", "<4 x float>", "<8 x float>"),
    ("x86_64-linux-gnu", "x86-64-v3", "<8 x float>", "<16 x float>"),
    ("x86_64-linux-gnu", "x86-64-v4", "<16 x float>", None),
])
def test_generated_vectors_follow_the_target(triple, cpu, widest, absent, monkeypatch):
    texts = []
    real = codegen.compile_ir
    monkeypatch.setattr(codegen, "compile_ir",
                        lambda text, target, **kw: texts.append(text) or real(text, target, **kw))
    graph = graphc.lower(examples.build("inception", seed=0))
    program = codegen.generate(graph, "inception", resolve_target(triple, cpu), graphc_h="")
    (text,) = texts
    assert widest in text
    assert absent is None or absent not in text
    assert f'target triple = "{resolve_target(triple, cpu).triple}"' in text
    assert program.object_code[:4] == b"\x7fELF"
    assert int.from_bytes(program.object_code[18:20], "little") == ELF_MACHINE[triple]


def test_unknown_triples_and_cpus_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unsupported target triple 'riscv64-linux-gnu'.*aarch64-linux-gnu"):
        resolve_target("riscv64-linux-gnu")
    with pytest.raises(ValueError, match=r"unknown cpu 'x86-64-v3' for aarch64-linux-gnu.*cortex-a72"):
        resolve_target(AARCH64, "x86-64-v3")
    assert resolve_target("aarch64-unknown-linux-gnu", "generic") == resolve_target(AARCH64)


def test_a_missing_cross_compiler_names_the_package(monkeypatch):
    monkeypatch.setenv("CC_aarch64_linux_gnu", "/nonexistent/aarch64-linux-gnu-gcc")
    graph = graphc.lower(examples.build("mlp", seed=0))
    with pytest.raises(ToolchainError, match=r"apt-get install gcc-aarch64-linux-gnu.*\$CC_aarch64_linux_gnu"):
        compile_library(graph, "mlp", triple=AARCH64, cache=False)


# ------------------------------------------------------------------ artifacts

def _build_twice(triple: str, root: Path, monkeypatch, pause: float = 0.0) -> tuple[dict, dict]:
    """The files of mlp (embedded and external weights) built for ``triple`` in two empty caches
    under different directories (so a leaked path differs), ``pause`` seconds apart."""
    graph = graphc.lower(examples.build("mlp", seed=3))
    written = []
    for run in ("first", "second"):
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(root / run / "cache"))
        files = {}
        for weights in ("embedded", "external"):
            built = compile_library(graph, f"mlp_{weights}", weights=weights, triple=triple)
            files.update(export_files(built, root / run / weights))
        written.append({p.relative_to(root / run): p.read_bytes() for p in (root / run).glob("*/*") if p.is_file()})
        time.sleep(pause)
    return written[0], written[1]


def _differing(first: dict, second: dict) -> list[str]:
    assert sorted(map(str, first)) == sorted(map(str, second))
    return sorted(str(path) for path in first if first[path] != second[path])


@pytest.mark.parametrize("triple", [AARCH64, "x86_64-linux-gnu"])
def test_the_same_model_and_triple_give_identical_files(triple, tmp_path, monkeypatch):
    _require_toolchain(triple)
    first, second = _build_twice(triple, tmp_path, monkeypatch)
    assert len(first) == 7  # .so, .a and .h of each, and the external weights
    assert _differing(first, second) == []
    assert _elf_machine(tmp_path / "first" / "embedded" / "libmlp_embedded.so") == ELF_MACHINE[triple]


def _with_debug_info(real):
    """compile_c with -g: the debug information names the directory it compiled in (the cache's)."""
    return lambda source, obj, extra=None, tc=toolchain.HOST: real(source, obj, [*(extra or []), "-g"], tc=tc)


def _archive_with_timestamps(objects, out, tc=toolchain.HOST):
    """An archive whose members carry their files' modification times (ar's U, not D)."""
    out.unlink(missing_ok=True)
    subprocess.run([tc.ar(), "rcsU", str(out), *map(str, objects)], check=True, capture_output=True)


@pytest.mark.parametrize("leak", ["path", "timestamp"])
def test_the_reproducibility_check_catches_a_leaked_path_or_timestamp(leak, tmp_path, monkeypatch):
    """The check above can fail: a build directory in the debug information, or file times in the
    archive (builds a second apart), make two builds differ, and the comparison says which files."""
    _require_toolchain("x86_64-linux-gnu")
    if leak == "path":
        monkeypatch.setattr(toolchain, "compile_c", _with_debug_info(toolchain.compile_c))
        first, second = _build_twice("x86_64-linux-gnu", tmp_path, monkeypatch)
    else:
        monkeypatch.setattr(toolchain, "archive", _archive_with_timestamps)
        first, second = _build_twice("x86_64-linux-gnu", tmp_path, monkeypatch, pause=1.1)
    differing = _differing(first, second)
    assert "embedded/libmlp_embedded.a" in differing and "external/libmlp_external.a" in differing
    if leak == "path":
        assert "embedded/libmlp_embedded.so" in differing
    assert not any(name.endswith((".h", ".weights")) for name in differing)


def test_compile_verb_writes_an_aarch64_library(tmp_path, capsys):
    _require_toolchain(AARCH64)
    out = tmp_path / "out"
    assert cli.main(["compile", "mlp", "--target", "native", "--triple", AARCH64, "--cpu", "cortex-a72",
                     "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "target: aarch64-linux-gnu, cpu cortex-a72 (128-bit vectors, 32 registers)" in printed
    assert _elf_machine(out / "libmlp.so") == 183
    assert (out / "libmlp.a").read_bytes()[:8] == b"!<arch>\n"
    assert "gc_model_mlp" in (out / "mlp.h").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--triple", AARCH64, "--cpu", "skylake"], "unknown cpu 'skylake' for aarch64-linux-gnu"),
    (["--triple", "mips-linux-gnu"], "unsupported target triple 'mips-linux-gnu'"),
    (["--triple", AARCH64, "--training"], "--training builds for this machine only"),
])
def test_compile_verb_refuses_bad_targets_in_one_line(argv, message, tmp_path, capsys):
    assert cli.main(["compile", "mlp", "--target", "native", "-o", str(tmp_path), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_targets_verb_lists_platforms_and_what_is_missing(capsys):
    assert cli.main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "x86_64-linux-gnu (this machine)" in out or "aarch64-linux-gnu (this machine)" in out
    assert "cortex-a72, neoverse-n1, apple-m1" in out
    try:
        toolchain_for(AARCH64).cc()
        assert "aarch64-linux-gnu: ready" in out
    except ToolchainError:
        assert "aarch64-linux-gnu: missing toolchain" in out and "gcc-aarch64-linux-gnu" in out


# ------------------------------------------------------------------ the C example under emulation

@pytest.mark.parametrize(("name", "batch"), [("mlp", 3), ("qa_two_inputs", 3),
                                             pytest.param("inception", 1, marks=pytest.mark.slow)])
def test_embed_c_for_aarch64_prints_the_host_outputs_under_qemu(name, batch, tmp_path):
    require_emulation(AARCH64)
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/embed_c")
    build = tmp_path / "build"
    assert _export_module().main(["--model", name, "--out", str(build), "--batch", str(batch), "--seed", "1",
                                  "--triple", AARCH64, "--cpu", "cortex-a72"]) == 0
    assert _elf_machine(build / f"lib{name}.so") == 183
    exe = tmp_path / "embed"
    proc = subprocess.run(["make", "-s", "-C", str(EXAMPLE), f"MODEL={name}", f"BUILD={build}", f"OUT={exe}",
                           f"CC={toolchain_for(AARCH64).cc()}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _elf_machine(exe) == 183
    run = subprocess.run([*emulator_command(AARCH64), str(exe), str(build / "inputs.txt"), "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    printed = read_tensors(run.stdout)
    expected = read_tensors((build / "expected.txt").read_text())  # this machine's native library
    assert [n for n, _ in printed] == [n for n, _ in expected]
    for (n, got), (_, want) in zip(printed, expected):
        assert got.shape == want.shape, n
        scale = float(np.max(np.abs(want))) if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=n)


def test_one_weights_file_serves_every_platform(tmp_path):
    """A model's external weights file is the same bytes for the host, aarch64 and wasm32 (the format
    is little-endian with 64-byte aligned entries on every platform), so one file serves them all."""
    graph = graphc.lower(examples.build("inception", seed=5))
    files = {}
    for triple in ("x86_64-linux-gnu", AARCH64, "wasm32-wasi"):
        _require_toolchain(triple)
        built = compile_library(graph, "inception", weights="external", triple=triple, cache=False)
        files[triple] = built.weights.read_bytes()
    assert len(set(files.values())) == 1, {t: len(b) for t, b in files.items()}
