"""graphc.onnx.verify: the report, per-layer localization of a mismatch, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.onnx
from graphc import Input, Model, layers
from graphc.backends.onnx import compare, verify_graph
from graphc.backends.reference import InputError
from graphc.ops import REGISTRY


def three_layer_model():
    x = Input(shape=(6,), name="features")
    h = layers.Dense(5, activation="relu", name="hidden")(x)
    t = layers.Dense(4, activation="tanh", name="squash")(h)
    return Model(x, [layers.Dense(3, name="logits")(t), layers.Dense(1, activation="sigmoid", name="score")(t)])


def test_report_per_output(rng):
    model = three_layer_model()
    report = graphc.onnx.verify(model, rng.standard_normal((3, 6)))
    assert report.ok and report.layers == [] and report.first_mismatch is None
    assert [c.name for c in report.outputs] == ["logits", "score"]
    logits = report.output("logits")
    assert logits.shape == (3, 3) and logits.dtype == "float32" and logits.layer == "logits"
    assert 0 <= logits.max_abs < 1e-5 and 0 <= logits.max_rel < 1e-4
    assert report.max_abs_error == max(c.max_abs for c in report.outputs)
    np.testing.assert_allclose(report.onnxruntime["logits"], report.reference["logits"], rtol=1e-4, atol=1e-5)
    table = report.table()
    assert "logits" in table and "score" in table and table.endswith("PASS") and str(report) == table
    with pytest.raises(KeyError, match="no output 'nope'"):
        report.output("nope")


def test_per_layer_exposes_every_intermediate(rng):
    model = three_layer_model()
    report = graphc.onnx.verify(model, rng.standard_normal((2, 6)), per_layer=True, optimize=False)
    graph = graphc.lower(model)
    values = [o for op in graph.ops() for o in op.outputs]
    assert [c.name for c in report.layers] == values
    assert {c.layer for c in report.layers} == {"hidden", "squash", "logits", "score"}
    for v in values:
        assert report.reference[v].shape == report.onnxruntime[v].shape
    assert "every layer agrees" in report.table()


@pytest.mark.parametrize("optimize", [False, True])
def test_per_layer_names_the_first_layer_that_disagrees(monkeypatch, rng, optimize):
    from graphc.ops.elementwise import onnx_activation

    model = three_layer_model()
    original = onnx_activation

    def wrong_tanh(ctx, name, x, attrs=None, out=None):  # tanh exported as sigmoid
        return original(ctx, "sigmoid" if name == "tanh" else name, x, attrs, out)

    monkeypatch.setattr("graphc.ops.elementwise.onnx_activation", wrong_tanh)
    report = graphc.onnx.verify(model, rng.standard_normal((3, 6)), per_layer=True, optimize=optimize)
    assert not report.ok
    bad = report.first_mismatch
    assert bad.layer == "squash" and bad.max_abs > 1e-2 and bad.worst is not None
    assert all(c.ok for c in report.layers if c.layer == "hidden")
    table = report.table()
    assert "first disagreement: layer 'squash'" in table and table.endswith("FAIL")
    plain = graphc.onnx.verify(model, rng.standard_normal((3, 6)), optimize=optimize)
    assert not plain.ok and plain.first_mismatch is None  # without per_layer: outputs only


def test_differences_from_optimization_are_pointed_out(rng):
    model = three_layer_model()
    graph = graphc.lower(model)
    other = graphc.lower(model)
    kernel = "logits/kernel"
    other.set_constant(kernel, other.constants[kernel] + 1.0)  # a "reference" that computes something else
    feeds = {"features": rng.standard_normal((2, 6)).astype(np.float32)}
    report = verify_graph(graph, feeds, per_layer=True, reference_graph=other)
    assert not report.output("logits").ok and report.output("score").ok
    assert report.first_mismatch is None and "comes from graph optimization" in report.table()


def test_verify_takes_lists_dicts_and_no_inputs(rng):
    a, b = Input(shape=(3,), name="a"), Input(shape=(None,), dtype="int32", name="ids")
    e = layers.GlobalAveragePooling1D()(layers.Embedding(7, 3)(b))
    model = Model([a, b], layers.add([a, e]))
    x = [rng.standard_normal((2, 3)), rng.integers(0, 7, size=(2, 5))]
    assert graphc.onnx.verify(model, x).ok
    assert graphc.onnx.verify(model, {"a": x[0], "ids": x[1]}).ok
    assert graphc.onnx.verify(model).ok  # random inputs: ids within the embedding's 7 rows
    feeds = graphc.onnx.random_inputs(model, batch_size=4, dims={"ids_len": 9}, seed=1)
    assert feeds["a"].shape == (4, 3) and feeds["ids"].shape == (4, 9)
    assert feeds["ids"].dtype == np.int32 and 0 <= feeds["ids"].min() and feeds["ids"].max() < 7


def test_bad_inputs_name_the_input(rng):
    a, b = Input(shape=(3,), name="a"), Input(shape=(None,), dtype="int32", name="ids")
    e = layers.GlobalAveragePooling1D()(layers.Embedding(7, 3)(b))
    model = Model([a, b], layers.add([a, e]))
    good_a, good_ids = rng.standard_normal((2, 3)), rng.integers(0, 7, size=(2, 5))
    with pytest.raises(InputError, match=r"missing \['ids'\].*unknown \['idz'\]"):
        graphc.onnx.verify(model, {"a": good_a, "idz": good_ids})
    with pytest.raises(InputError, match=r"input 'a' expects shape \(None, 3\), got \(2, 4\) \(axis 1: expected 3"):
        graphc.onnx.verify(model, [rng.standard_normal((2, 4)), good_ids])
    with pytest.raises(InputError, match=r"input 'ids' expects integer ids \(int32\), got float64"):
        graphc.onnx.verify(model, [good_a, good_ids + 0.5])
    with pytest.raises(InputError, match=r"input 'a' expects float32, got <U1"):
        graphc.onnx.verify(model, [np.array([["x"] * 3] * 2), good_ids])
    with pytest.raises(InputError, match="input 'ids': free dimension 'batch' .* is 3, but another input gives it 2"):
        graphc.onnx.verify(model, [good_a, rng.integers(0, 7, size=(3, 5))])
    with pytest.raises(InputError, match=r"takes 2 inputs \['a', 'ids'\], got a list of 1"):
        graphc.onnx.verify(model, [good_a])


def test_compare_semantics():
    ref = np.array([1.0, 100.0, 0.0, np.nan, 1e-7], np.float32)
    got = np.array([1.00005, 100.005, 9e-6, np.nan, 0.0], np.float32)
    c = compare("y", ref, got, rtol=1e-4, atol=1e-5)
    assert c.ok and c.worst == (1,) and c.max_abs == pytest.approx(0.005, rel=1e-3)
    assert c.max_rel == pytest.approx(5e-5, rel=1e-2)  # over |ref| >= atol/rtol only: 1 and 100
    assert not compare("y", ref, got, rtol=1e-5, atol=1e-5).ok
    assert not compare("y", ref, np.where(np.isnan(got), 0, got), rtol=1e-4, atol=1e-5).ok
    inf = compare("y", np.array([np.inf]), np.array([np.inf]), 1e-4, 1e-5)
    assert inf.ok and inf.max_abs == 0
    assert compare("i", np.array([1, 2]), np.array([1, 2]), 1e-4, 1e-5).ok
    assert not compare("i", np.array([1, 2]), np.array([1, 3]), 1e-4, 1e-5).ok
    shape = compare("y", np.zeros((2, 3)), np.zeros((3, 2)), 1e-4, 1e-5)
    assert not shape.ok and "shape (3, 2) from onnxruntime, (2, 3) from the reference" in shape.describe()
    assert compare("e", np.zeros((0, 3)), np.zeros((0, 3)), 1e-4, 1e-5).ok


def test_a_model_that_cannot_be_exported_fails_before_running(monkeypatch, rng):
    model = three_layer_model()
    monkeypatch.setattr(REGISTRY["relu"], "to_onnx", None)
    with pytest.raises(ValueError, match="layer 'hidden'.*cannot be exported to ONNX"):
        graphc.onnx.verify(model, rng.standard_normal((1, 6)), optimize=False)


def test_onnxruntime_graph_runs_like_the_reference(rng):
    from graphc.backends.onnx import OnnxRuntimeGraph
    from graphc.backends.reference import run

    model = three_layer_model()
    graph = graphc.onnx.to_graph(model)
    runner = OnnxRuntimeGraph(graph, threads=1)
    x = rng.standard_normal((3, 6))  # float64: converted like the reference does
    got, want = runner.run({"features": x}), run(graph, {"features": x})
    assert list(got) == ["logits", "score"]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="input 'features' expects shape"):
        runner.run({"features": x[:, :5]})


def test_error_table_over_bundled_examples(capsys):
    from graphc.backends.onnx.__main__ import main

    table, ok = graphc.onnx.error_table(["mlp", "siamese_lstm"], batch_sizes=(1, 3))
    lines = table.splitlines()
    assert ok and lines[1].split()[:2] == ["model", "batch"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["mlp"] * 2 + ["siamese_lstm"] * 4 and all(r[-1] == "yes" for r in rows)
    assert main(["mlp", "--batch", "2"]) == 0
    assert "mlp    2" in capsys.readouterr().out
