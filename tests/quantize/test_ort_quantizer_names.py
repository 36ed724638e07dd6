"""graphc's ONNX export leaves onnxruntime's static quantizer the names it makes up: a tensor ``T`` gets
quantization parameters named ``T_scale`` and ``T_zero_point``, so no initializer of the export may
already be called that (a lone BatchNormalization's multiplier once was ``<layer>_scale`` beside the
layer's output ``<layer>``, and the quantizer read the 64 multipliers as that output's scale)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import graphc
from graphc import examples


def test_no_initializer_is_named_like_a_quantization_parameter(tmp_path):
    graphc.onnx.export(examples.build("separable_conv_bn", seed=0), tmp_path / "m.onnx", optimize=2)
    g = onnx.load(str(tmp_path / "m.onnx")).graph
    tensors = {v for n in g.node for v in n.output} | {i.name for i in g.input}
    made_up = {f"{t}{suffix}" for t in tensors for suffix in ("_scale", "_zero_point")}
    assert made_up & {i.name for i in g.initializer} == set()


def test_onnxruntime_quantizes_and_runs_the_export(tmp_path, rng):
    quantization = pytest.importorskip("onnxruntime.quantization")
    import onnxruntime as ort

    name = "separable_conv_bn"
    graphc.onnx.export(examples.build(name, seed=0), tmp_path / "m.onnx", optimize=2)
    samples = examples.inputs(name, rng, 4)
    x = samples[0] if isinstance(samples, (list, tuple)) else samples
    feed = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].name

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{feed: x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.feeds, None)

    quantization.quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), Reader(),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    out = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {feed: x})
    assert out[0].shape == (len(x), 10) and np.isfinite(out[0]).all()
