"""`graphc compile MODEL --target native -o OUT` (and --target onnx)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import cli, examples
from graphc.backends.llvm.target import host_platform
from graphc.runtime import Library, NativeError


def test_compile_native_writes_a_library_that_runs(tmp_path, capsys):
    rc = cli.main(["compile", "mlp", "--target", "native", "-o", str(tmp_path), "--name", "clf",
                   "--weights", "external"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.h", "clf.weights", "libclf.a", "libclf.so"]
    assert "kernel launches" in out
    lib = Library(tmp_path / "libclf.so", "clf")
    x = examples.inputs("mlp", np.random.default_rng(0), 2)
    model = examples.build("mlp", seed=0)
    got = lib.instance(1, tmp_path / "clf.weights").run([np.asarray(x, np.float32)])[0]
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-4, atol=1e-6)


def test_compile_onnx_and_bad_arguments(tmp_path, capsys):
    assert cli.main(["compile", "mlp", "--target", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0 and "opset" in capsys.readouterr().out
    assert cli.main(["compile", "mlp", "--target", "native", "-o", str(tmp_path), "--cpu", "pentium"]) == 1
    assert "unknown native cpu 'pentium'" in capsys.readouterr().err


@pytest.mark.skipif(host_platform() != "x86_64-linux-gnu", reason="x86-64 levels are built on x86-64 hosts")
def test_compile_for_a_cpu_level_writes_a_library_without_running_it(tmp_path, capsys, monkeypatch):
    """A library for a portable level this machine may not run (AVX-512 on an AVX2 build machine, stood
    for by hiding the feature) is written like a cross-compiled one; loading it here is refused by name."""
    monkeypatch.setenv("GRAPHC_HIDE_CPU_FEATURES", "avx512f")
    out = tmp_path / "v4"
    assert cli.main(["compile", "mlp", "--target", "native", "--cpu", "x86-64-v4", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    assert "target: x86_64-linux-gnu, cpu x86-64-v4 (512-bit vectors" in capsys.readouterr().out
    lib = Library(out / "libmlp.so", "mlp")
    assert lib.target_cpu == "x86-64-v4" and "+avx512f" in lib.target_features.split(",")
    with pytest.raises(NativeError, match="whose instructions this CPU lacks"):
        lib.instance(1)
