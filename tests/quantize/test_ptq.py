"""Post-training quantization: calibration methods on known distributions, QDQ placement, accuracy of a
trained seed classifier, the ONNX QDQ export in onnxruntime, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import examples
from graphc.backends.onnx import OnnxRuntimeGraph, export_graph
from graphc.backends.reference import run
from graphc.quantization import QuantizationError
from graphc.quantization.calibrate import RangeCollector
from graphc.quantization.params import activation_params, weight_params
from tests.onnxruntime_int8 import skip_where_onnxruntime_saturates

# ---------------------------------------------------------------------------- calibration

def _collect(method, batches, **kw):
    c = RangeCollector(method, **kw)
    for b in batches:
        c.update(b)
    return c.range()


def test_minmax_keeps_the_extremes(rng):
    batches = [rng.standard_normal(1000) for _ in range(5)]
    low, high = _collect("minmax", batches)
    assert low == min(b.min() for b in batches) and high == max(b.max() for b in batches)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_nan_and_infinities_are_left_out_of_the_range(rng, method, dtype):
    clean = [rng.standard_normal(n).astype(dtype) for n in (1, 17, 1000)]
    dirty = [b.copy() for b in clean]
    dirty[1][[0, 5]] = [np.nan, np.inf]
    dirty[2][[3, 7, 11]] = [-np.inf, np.nan, np.inf]
    nothing = np.full(3, np.nan, dtype)  # a batch of no finite value changes nothing
    finite = [b[np.isfinite(b)] for b in dirty]
    assert _collect(method, [*dirty, nothing]) == _collect(method, finite)
    low, high = _collect("minmax", dirty)
    assert (low, high) == (min(float(b.min()) for b in finite), max(float(b.max()) for b in finite))
    assert not RangeCollector(method).seen and _collect(method, [nothing]) == (0.0, 0.0)


def test_percentile_cuts_each_tail(rng):
    x = rng.standard_normal(1_000_000)
    low, high = _collect("percentile", np.split(x, 10), percentile=99.0)
    # 0.5 % in each tail of a standard normal: +-2.576; one histogram bin of tolerance
    assert abs(low + 2.576) < 0.01 and abs(high - 2.576) < 0.01


def test_percentile_histogram_widens_across_batches(rng):
    low, high = _collect("percentile", [rng.uniform(-1, 1, 100_000), rng.uniform(-10, 10, 100_000)], percentile=99.9)
    assert -10 <= low < -9.5 and 9.5 < high <= 10


def test_entropy_clips_a_lone_outlier_and_keeps_a_uniform_range(rng):
    batches = [rng.standard_normal(10_000) for _ in range(10)]
    batches[3][0] = 40.0
    low, high = _collect("entropy", batches)
    assert 2.5 < high < 5 and -5 < low < -2.5 and low == -high  # symmetric data, threshold far below 40
    low, high = _collect("entropy", [rng.uniform(-1, 1, 100_000)])
    assert low < -0.99 and high > 0.99  # nothing to clip: the threshold is the range


def test_entropy_on_a_non_negative_tensor_is_one_sided(rng):
    low, high = _collect("entropy", [np.maximum(rng.standard_normal(100_000), 0)])
    assert low == 0.0 and 1.5 < high < 4.3


def test_activation_and_weight_parameters():
    p = activation_params(0.0, 2.55, "uint8")
    assert p.zero_point == 0 and np.isclose(p.scale, 0.01)
    p = activation_params(-1.0, 1.0, "int8")
    assert p.zero_point.dtype == np.int8 and p.zero_point in (-1, 0)
    assert activation_params(0.5, 2.0, "uint8").zero_point == 0  # the range always contains 0
    w = np.array([[1.0, -0.5], [-2.54, 0.25]], np.float32)
    p = weight_params(w, per_channel=True)
    np.testing.assert_allclose(p.scale, [2.54 / 127, 0.5 / 127], rtol=1e-6)
    assert (p.zero_point == 0).all() and p.zero_point.dtype == np.int8


# ---------------------------------------------------------------------------- quantized graphs

def _one_step(graph, value):
    """The quantization step (scale) of a graph value that a dequantize_linear produces."""
    op = graph.producer(value)
    assert op.type == "dequantize_linear", f"{value} is not dequantized"
    return float(np.max(graph.constants[op.inputs[1]]))


def test_qdq_placement_on_the_residual_example(rng):
    model = examples.build("residual", seed=0)
    x = examples.inputs("residual", rng, 8)
    q = graphc.quantize(model, x)
    counts = q.op_counts()
    assert counts["quantize_linear"] >= 5 and counts["dequantize_linear"] > counts["quantize_linear"]
    for op in q.ops():  # every convolution reads dequantized activations and int8 weights
        if op.type == "fused_conv":
            x_in, w_in = (q.producer(v) for v in op.inputs[:2])
            assert x_in.type == "dequantize_linear" and w_in.type == "dequantize_linear"
            assert q.type_of(w_in.inputs[0]).dtype == "int8" and w_in.inputs[0] in q.constants
            assert q.constants[w_in.inputs[1]].shape == (q.type_of(op.outputs[0]).shape[-1],)  # per channel
    assert q.producer(q.outputs[0]).type == "dequantize_linear"  # the quantized output keeps its name
    assert q.outputs == graphc.lower(model).outputs


def test_quantized_residual_runs_in_onnxruntime_within_one_step(rng):
    skip_where_onnxruntime_saturates()
    model = examples.build("residual", seed=0)
    q = graphc.quantize(model, examples.inputs("residual", rng, 16), method="percentile")
    x = examples.inputs("residual", rng, 3)
    want = run(q, {q.inputs[0]: x})
    got = OnnxRuntimeGraph(q).run({q.inputs[0]: x})
    for name in q.outputs:
        step = _one_step(q, name)
        assert np.abs(want[name] - got[name]).max() <= step * (1 + 1e-4), name


def test_onnxruntime_fuses_the_qdq_export_into_integer_kernels(rng, tmp_path):
    import onnx
    import onnxruntime as ort

    model = examples.build("residual", seed=0)
    q = graphc.quantize(model, examples.inputs("residual", rng, 8))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(export_graph(q, None).SerializeToString(), options, providers=["CPUExecutionProvider"])
    kinds = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert {"QLinearConv", "QLinearAdd"} <= kinds, kinds


def test_graphc_onnx_verify_compares_the_quantized_graph(rng):
    model = examples.build("separable_conv_bn", seed=0)
    q = graphc.quantize(model, examples.inputs("separable_conv_bn", rng, 8), method="entropy")
    report = graphc.onnx.verify(q, examples.inputs("separable_conv_bn", rng, 2), atol=1e-6)
    assert report.ok, report


def _trained_mlp(rng):
    """The bundled MLP trained on 10 separable Gaussian clusters in 64 features."""
    centers = rng.standard_normal((10, 64)).astype(np.float32)
    labels = rng.integers(0, 10, size=2000)
    x = (centers[labels] + 0.8 * rng.standard_normal((2000, 64))).astype(np.float32)
    model = examples.build("mlp", seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:1500], labels[:1500], epochs=8, batch_size=64, verbose=0)
    return model, x[1500:], labels[1500:], x[:100]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_quantized_mlp_keeps_its_accuracy(rng, method):
    model, x_test, y_test, calibration = _trained_mlp(rng)
    q = graphc.quantize(model, calibration, method=method)
    float_pred = np.argmax(model.predict(x_test, verbose=0), axis=-1)
    quant_pred = np.argmax(graphc.build(q, "reference").predict(x_test), axis=-1)
    float_acc, quant_acc = (float_pred == y_test).mean(), (quant_pred == y_test).mean()
    agreement = (float_pred == quant_pred).mean()
    assert float_acc > 0.9, float_acc  # the seed model learned the task
    assert agreement >= 0.98 and float_acc - quant_acc <= 0.01, (agreement, float_acc, quant_acc)
    onnx_pred = np.argmax(graphc.build(q, "onnx").predict(x_test), axis=-1)
    assert (onnx_pred == quant_pred).mean() >= 0.99


def test_excluded_layers_stay_float_and_the_report_names_every_layer(rng):
    model = examples.build("mlp", seed=0)
    x = examples.inputs("mlp", rng, 32)
    q = graphc.quantize(model, x, exclude=["dense_1"])
    for op in q.ops():
        if op.layer == "dense_1" and op.type == "fused_matmul":
            assert q.producer(op.inputs[1]) is None  # its weight is still the float constant
    report = graphc.quantize_report(model, q, x)
    rows = {r.layer: r for r in report.layers}
    assert set(rows) == {"dense", "dense_1", "dense_2"} and not rows["dense_1"].quantized and rows["dense"].quantized
    assert all(r.sqnr_db > 20 for r in report.layers), report
    assert "SQNR dB" in report.table() and "dense_1" in report.table()


def test_native_target_runs_quantized_graphs_on_integer_kernels(rng):
    """The native build folds the products into int8 ops (tests/passes/test_fold_qdq.py has the rest)."""
    q = graphc.quantize(examples.build("mlp", seed=0), examples.inputs("mlp", rng, 4))
    x = examples.inputs("mlp", rng, 3)
    got = graphc.build(q, "native").predict(x)
    np.testing.assert_allclose(got, run(q, {q.inputs[0]: x})[q.outputs[0]], atol=0.02)


def test_optimizing_again_keeps_int8_weights(rng):
    q = graphc.quantize(examples.build("mlp", seed=0), examples.inputs("mlp", rng, 4))
    again = graphc.optimize(q, 2)
    assert again.op_counts()["dequantize_linear"] == q.op_counts()["dequantize_linear"]


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    ({"method": "kl"}, "unknown method='kl'; choose one of minmax, percentile, entropy"),
    ({"weights": "per_row"}, "unknown weights='per_row'"),
    ({"activations": "per_channel"}, "unknown activations='per_channel'"),
    ({"activation_dtype": "int16"}, "unknown activation_dtype='int16'"),
    ({"exclude": ["dense_9"]}, "exclude names no layer of the model: 'dense_9'; its layers are dense, dense_1"),
    ({"method": "percentile", "percentile": 20.0}, "percentile must be in"),
])
def test_bad_options_are_refused_naming_them(rng, kwargs, message):
    with pytest.raises(QuantizationError, match=message):
        graphc.quantize(examples.build("mlp", seed=0), examples.inputs("mlp", rng, 4), **kwargs)


@pytest.mark.parametrize("data, message", [
    (np.zeros((0, 64), np.float32), "calibration data is empty: no samples for input\\(s\\) 'features'"),
    (np.zeros((4, 63), np.float32), "calibration data: .*features"),
    (None, "calibration data is missing"),
])
def test_bad_calibration_data_is_refused_naming_it(data, message):
    with pytest.raises(QuantizationError, match=message):
        graphc.quantize(examples.build("mlp", seed=0), data)


def test_a_quantized_graph_is_not_quantized_twice(rng):
    q = graphc.quantize(examples.build("mlp", seed=0), examples.inputs("mlp", rng, 4))
    with pytest.raises(QuantizationError, match="already quantized"):
        graphc.quantize(q, examples.inputs("mlp", rng, 4))
