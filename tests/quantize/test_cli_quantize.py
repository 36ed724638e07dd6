"""``graphc compile --quantize int8`` and ``graphc quantize`` on a bundled example."""

from __future__ import annotations

import numpy as np
import onnx

from graphc.cli import main


def _calibration(tmp_path, rng, **arrays):
    path = tmp_path / "calibration.npz"
    np.savez(path, **(arrays or {"features": rng.random((40, 64), dtype=np.float32)}))
    return str(path)


def test_compile_onnx_int8_writes_qdq_and_prints_the_layer_report(tmp_path, rng, capsys):
    out = tmp_path / "mlp.onnx"
    assert main(["compile", "mlp", "--target", "onnx", "--quantize", "int8", "--calibration",
                 _calibration(tmp_path, rng), "--calibration-method", "percentile", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SQNR dB" in text and "dense_1" in text and "int8 QDQ" in text
    kinds = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul"} <= kinds


def test_compile_native_int8_writes_a_library_and_prints_the_layer_report(tmp_path, rng, capsys):
    assert main(["compile", "mlp", "--target", "native", "--quantize", "int8", "--calibration",
                 _calibration(tmp_path, rng), "-o", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "SQNR dB" in text and "wrote" in text and (tmp_path / "libmlp.so").exists()
    assert main(["compile", "mlp", "--target", "native", "--quantize", "int8", "--training", "--calibration",
                 _calibration(tmp_path, rng), "-o", str(tmp_path)]) == 1
    assert "--quantize int8: inference libraries" in capsys.readouterr().err


def test_quantize_report_and_its_errors(tmp_path, rng, capsys):
    path = _calibration(tmp_path, rng)
    assert main(["quantize", "mlp", "--calibration", path, "--exclude", "dense_2"]) == 0
    assert "dense_2" in capsys.readouterr().out
    assert main(["quantize", "mlp", "--calibration", path, "--exclude", "dense_9"]) == 1
    assert "exclude names no layer of the model: 'dense_9'" in capsys.readouterr().err
    assert main(["quantize", "mlp", "--calibration", str(tmp_path / "none.npz")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["compile", "mlp", "--target", "onnx", "--quantize", "int8", "-o", str(tmp_path / "m.onnx")]) == 1
    assert "needs --calibration" in capsys.readouterr().err
