"""`graphc compile MODEL --target native -o OUT` (and --target onnx)."""

from __future__ import annotations

import numpy as np

from graphc import cli, examples
from graphc.runtime import Library


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
