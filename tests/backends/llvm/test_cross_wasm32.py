"""Cross-compiling for wasm32-wasi: SIMD128 kernels, NAME.wasm exporting the C ABI, reproducible
artifacts, and examples/embed_c built against cross-compiled seed models and run under wasmtime,
printing what this machine's own native library computes.

The tests that build WebAssembly programs need clang, lld, wasi-libc and libclang-rt-dev-wasm32
(Debian) and the ``wasmtime`` Python module to run them; they skip, saying what is missing, where
those are not installed. The native op suite runs under wasmtime with
``GRAPHC_TEST_TRIPLE=wasm32-wasi`` (see tests/backends/llvm/emulation.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

import graphc
from graphc import cli, examples
from graphc.backends.llvm import codegen, compile_library, export_files
from graphc.backends.llvm.target import resolve_target
from graphc.backends.llvm.toolchain import CROSS_TOOLS, toolchain_for
from tests.backends.llvm.emulation import require_emulation, run_program
from tests.backends.llvm.test_cross_aarch64 import EXAMPLE, _export_module, _require_toolchain
from tests.backends.llvm.test_embed_c import read_tensors

WASM = "wasm32-wasi"
WASM_MAGIC = b"\0asm"


def test_wasm32_target_is_simd128_with_4_lanes(monkeypatch):
    target = resolve_target(WASM)
    assert (target.triple, target.platform, target.arch) == ("wasm32-unknown-wasi", WASM, "wasm32")
    assert (target.vector_bits, target.vw, target.gemm_vw) == (128, 4, 4)
    assert target.features == "+simd128"
    texts = []
    real = codegen.compile_ir
    monkeypatch.setattr(codegen, "compile_ir",
                        lambda text, target, **kw: texts.append(text) or real(text, target, **kw))
    program = codegen.generate(graphc.lower(examples.build("mlp", seed=0)), "mlp", target, graphc_h="")
    assert "<4 x float>" in texts[0] and "<8 x float>" not in texts[0]
    assert program.object_code[:4] == WASM_MAGIC


def test_the_same_model_gives_identical_wasm_files(tmp_path, monkeypatch):
    _require_toolchain(WASM)
    graph = graphc.lower(examples.build("mlp", seed=3))
    written = []
    for run in ("first", "second"):
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / run / "cache"))
        files = export_files(compile_library(graph, "mlp", triple=WASM), tmp_path / run / "out")
        written.append({kind: path.read_bytes() for kind, path in files.items()})
    assert sorted(written[0]) == ["header", "shared", "static"]
    assert written[0] == written[1]
    assert written[0]["shared"][:4] == WASM_MAGIC


def test_the_wasm_module_exports_the_c_abi(tmp_path):
    require_emulation(WASM)
    import wasmtime

    files = export_files(compile_library(graphc.lower(examples.build("mlp", seed=0)), "mlp", triple=WASM), tmp_path)
    assert files["shared"].name == "mlp.wasm"
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(files["shared"]))
    exports = {e.name for e in module.exports}
    for name in ("gc_model_mlp", "gc_instance_create", "gc_instance_run", "gc_instance_release", "gc_model_input",
                 "gc_status_message", "malloc", "free", "_initialize", "memory"):
        assert name in exports, f"{name} is not exported"
    assert not any(name.startswith("gc__") for name in exports), "runtime internals must stay hidden"


@pytest.mark.parametrize(("name", "batch"), [("mlp", 3), ("qa_two_inputs", 3),
                                             pytest.param("inception", 1, marks=pytest.mark.slow)])
def test_embed_c_for_wasm32_prints_the_host_outputs_under_wasmtime(name, batch, tmp_path):
    require_emulation(WASM)
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/embed_c")
    build = tmp_path / "build"
    assert _export_module().main(["--model", name, "--out", str(build), "--batch", str(batch), "--seed", "1",
                                  "--triple", WASM]) == 0
    assert (build / f"{name}.wasm").read_bytes()[:4] == WASM_MAGIC
    exe = build / "embed.wasm"
    cross = CROSS_TOOLS[WASM]
    proc = subprocess.run(["make", "-s", "-C", str(EXAMPLE), f"MODEL={name}", f"BUILD={build}", f"OUT={exe}",
                           f"CC={toolchain_for(WASM).cc()}",
                           f"CFLAGS={' '.join(cross.flags)} -std=c11 -O2 -Wall -Wextra",
                           f"LDLIBS={' '.join(cross.link_flags)}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    run = run_program(WASM, exe, ["inputs.txt", "2"], build)
    assert run.returncode == 0, run.stderr
    printed = read_tensors(run.stdout)
    expected = read_tensors((build / "expected.txt").read_text())  # this machine's native library
    assert [n for n, _ in printed] == [n for n, _ in expected]
    for (n, got), (_, want) in zip(printed, expected):
        assert got.shape == want.shape, n
        scale = float(np.max(np.abs(want))) if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=n)


def _wasm_runner():
    spec = importlib.util.spec_from_file_location("embed_wasm_run", EXAMPLE.parent / "embed_wasm" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp", "qa_two_inputs"])
def test_python_runs_the_wasm_module_through_the_c_abi(name, tmp_path):
    require_emulation(WASM)
    runner = _wasm_runner()
    model = examples.build(name, seed=2)
    native = graphc.build(model, target="native")
    files = native.export_library(tmp_path, name=name, triple=WASM)
    wasm = runner.WasmModel(files["shared"])
    feeds = native.feeds(examples.inputs(name, np.random.default_rng(2), 3))
    arrays = [np.asarray(feeds[n], dtype=dt) for n, dt in native._in_dtypes]
    want = native.run(dict(zip([n for n, _ in native._in_dtypes], arrays)))
    got = wasm.run(arrays)
    assert [d.name for d in wasm.outputs] == list(native.output_names)
    for g, key in zip(got, native.graph.outputs):
        w = want[key]
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(w))), err_msg=key)
    bad = [arrays[0][None], *arrays[1:]]  # one axis too many
    with pytest.raises(runner.WasmModelError, match=f"input '{wasm.inputs[0].name}'"):
        wasm.run(bad)
    wasm.close()


def test_compile_verb_writes_a_wasm_module(tmp_path, capsys):
    _require_toolchain(WASM)
    assert cli.main(["compile", "merge", "--target", "native", "--triple", WASM, "-o", str(tmp_path)]) == 0
    assert "target: wasm32-wasi, cpu generic (128-bit vectors, 16 registers)" in capsys.readouterr().out
    assert (tmp_path / "merge.wasm").read_bytes()[:4] == WASM_MAGIC
    assert cli.main(["targets"]) == 0
    assert "wasm32-wasi: ready" in capsys.readouterr().out
