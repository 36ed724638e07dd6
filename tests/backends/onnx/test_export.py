"""graphc.onnx.export: names, dynamic axes, initializers, opsets, layouts, files and errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import graphc
import graphc.onnx
from graphc import Input, Model, layers
from graphc.backends.onnx import (
    EmitContext,
    GraphEmitter,
    OnnxExportError,
    default_opset,
    export_graph,
    ort_max_opset,
    verify_graph,
)
from graphc.backends.onnx.opset import MIN_OPSET, onnx_max_opset
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import REGISTRY, OpBuilder
from tests.backends.onnx.checks import check_model


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def qa_model():
    text = Input(shape=(None,), dtype="int32", name="text")
    question = Input(shape=(None,), dtype="int32", name="question")
    t = layers.LSTM(4, name="text_encoder")(layers.Embedding(20, 3, name="text_embed")(text))
    q = layers.LSTM(2, name="question_encoder")(layers.Embedding(20, 3, name="question_embed")(question))
    answer = layers.Dense(5, activation="softmax", name="answer")(layers.concatenate([t, q]))
    return Model([text, question], answer)


def test_inputs_outputs_keep_keras_names_and_free_dims_are_named_axes():
    proto = graphc.onnx.export(qa_model())
    assert [i.name for i in proto.graph.input] == ["text", "question"]
    assert [o.name for o in proto.graph.output] == ["answer"]
    assert _dims(proto.graph.input[0]) == ["batch", "text_len"]
    assert _dims(proto.graph.input[1]) == ["batch", "question_len"]
    assert _dims(proto.graph.output[0]) == ["batch", 5]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert dict((p.key, p.value) for p in proto.metadata_props)["graphc.free_dims"] == "batch,question_len,text_len"


def test_weights_are_initializers_named_after_their_layers():
    model = qa_model()
    proto = graphc.onnx.export(model, optimize=False)
    names = {i.name for i in proto.graph.initializer}
    for w in model.weights:
        assert w.path in names, f"{w.path} not among {sorted(names)}"
    # the LSTM kernels are stored in ONNX's layout under their own names
    kernel = next(i for i in proto.graph.initializer if i.name == "text_encoder/kernel")
    assert list(kernel.dims) == [1, 16, 3]


def test_node_names_and_docs_carry_the_layer():
    proto = graphc.onnx.export(qa_model(), optimize=False)
    lstm = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert [n.name.split("/")[0] for n in lstm] == ["text_encoder", "question_encoder"]
    assert "layer 'text_encoder'" in lstm[0].doc_string


def test_value_info_declares_graphc_shapes_for_every_value():
    model = qa_model()
    graph = graphc.onnx.to_graph(model, optimize=False)
    proto = graphc.onnx.export(model, optimize=False)
    declared = {vi.name for vi in proto.graph.value_info}
    produced = {o for n in proto.graph.node for o in n.output}
    values = [o for op in graph.ops() for o in op.outputs if o not in graph.outputs]
    assert values and all(v in declared for v in values if v in produced)
    check_model(proto, graph)


def test_default_opset_is_the_newest_onnxruntime_fully_supports():
    proto = graphc.onnx.export(qa_model())
    assert proto.opset_import[0].version == default_opset() == graphc.onnx.default_opset() == ort_max_opset()
    assert 17 <= default_opset() <= onnx_max_opset()
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import))


@pytest.mark.parametrize("opset", [MIN_OPSET, 13, 16, 17])
def test_older_opsets_export_and_verify(opset, rng):
    x = Input(shape=(None, 4), name="x")
    y = layers.LSTM(3, return_sequences=True)(x)
    y = layers.LayerNormalization()(y)
    y = layers.Dense(5, activation="gelu")(y)
    y = layers.GlobalAveragePooling1D()(y)
    model = Model(x, layers.Dense(2, activation="softmax")(y))
    proto = graphc.onnx.export(model, opset=opset)
    assert proto.opset_import[0].version == opset
    check_model(proto, graphc.onnx.to_graph(model))
    report = graphc.onnx.verify(model, rng.standard_normal((3, 5, 4)).astype(np.float32), opset=opset)
    assert report.ok and report.opset == opset, report


def test_old_opset_refused_naming_the_op_that_needs_a_newer_one(rng):
    g = Graph("g")
    g.add_input("x", TensorType("float32", ("batch", 3, 5)))
    g.set_outputs([OpBuilder(g, layer="attention").softmax("x", axis=1)])
    with pytest.raises(OnnxExportError, match=r"layer 'attention' \(op 'softmax', softmax\) needs ONNX opset 13 or "
                                              r"newer \(Softmax over axis 1, not the last one\); .* opset 12"):
        export_graph(g, opset=12)
    assert export_graph(g, opset=13).opset_import[0].version == 13
    # over the last axis, the old Softmax means the same: opset 12 works
    x = Input(shape=(3, 5))
    model = Model(x, layers.Dense(4, activation="softmax")(x))
    report = graphc.onnx.verify(model, rng.standard_normal((2, 3, 5)).astype(np.float32), opset=12)
    assert report.ok and report.opset == 12, report


def test_ops_missing_from_the_target_opset_are_refused_by_name():
    g = Graph("g")
    g.add_input("x", TensorType("float32", ("batch", 3)))
    y = OpBuilder(g, layer="act").relu("x")
    g.set_outputs([y])
    ctx = EmitContext(GraphEmitter(g, 19), g.op(y))
    with pytest.raises(OnnxExportError, match=r"layer 'act' \(op 'relu', relu\) needs ONNX opset 20 or newer "
                                              r"\(for Gelu\)"):
        ctx.node("Gelu", ["x"])
    with pytest.raises(OnnxExportError, match="ONNX has no operator 'NoSuchOp'"):
        ctx.node("NoSuchOp", ["x"])
    g2 = Graph("g2")
    g2.add_input("x", TensorType("int32", ("batch", 3)))
    g2.set_outputs([OpBuilder(g2, layer="clamp").clip("x", min=0, max=3)])
    with pytest.raises(OnnxExportError, match=r"layer 'clamp'.*opset 12 or newer \(Clip on integers\)"):
        export_graph(g2, opset=11)


@pytest.mark.parametrize("opset,message", [(10, "opset 11 or newer"), (10_000, "newer than the installed onnx")])
def test_unusable_opsets_are_refused(opset, message):
    with pytest.raises(ValueError, match=message):
        graphc.onnx.export(qa_model(), opset=opset)
    with pytest.raises(TypeError, match="opset must be an integer"):
        graphc.onnx.export(qa_model(), opset="17")


def test_a_layer_without_onnx_mapping_is_named(monkeypatch):
    x = Input(shape=(4,))
    model = Model(x, layers.Dense(3, activation="tanh", name="squash")(x))
    monkeypatch.setattr(REGISTRY["tanh"], "to_onnx", None)
    with pytest.raises(OnnxExportError, match=r"layer 'squash' \(op 'tanh', tanh\) cannot be exported to ONNX: "
                                              r"graphc op 'tanh' is an op without an ONNX mapping"):
        graphc.onnx.export(model, optimize=False)
    monkeypatch.setattr(REGISTRY["tanh"], "training_only", True)
    with pytest.raises(OnnxExportError, match="'tanh' is a training-only op without an ONNX mapping"):
        graphc.onnx.export(model, optimize=False)


def test_an_lstm_activation_onnx_cannot_express_is_named():
    x = Input(shape=(None, 3))
    model = Model(x, layers.LSTM(2, activation="gelu", name="odd_lstm")(x))
    with pytest.raises(OnnxExportError, match=r"layer 'odd_lstm'.*activation 'gelu' has no equivalent"):
        graphc.onnx.export(model)


def test_a_failing_mapping_is_reported_with_its_layer(monkeypatch):
    x = Input(shape=(4,))
    model = Model(x, layers.Dense(3, name="proj")(x))

    def broken(ctx, op):
        raise RuntimeError("boom")

    monkeypatch.setattr(REGISTRY["matmul"], "to_onnx", broken)
    with pytest.raises(OnnxExportError, match=r"layer 'proj' \(op 'matmul', matmul\): ONNX export failed: boom"):
        graphc.onnx.export(model, optimize=False)

    monkeypatch.setattr(REGISTRY["matmul"], "to_onnx", lambda ctx, op: ctx.node("Identity", [ctx.input_name(0)]))
    with pytest.raises(OnnxExportError, match=r"layer 'proj'.*did not produce \['matmul'\]"):
        graphc.onnx.export(model, optimize=False)


def test_bad_model_arguments():
    with pytest.raises(TypeError, match="expected a graphc Model or a graphc.ir.Graph, got str"):
        graphc.onnx.export("model.py")
    g = Graph("g")
    g.add_input("x", TensorType("float32", ("batch", 3)))
    g.set_outputs(["x"])
    with pytest.raises(OnnxExportError, match="graph output 'x' is a graph input"):
        export_graph(g)
    g.add_constant("c", np.ones(3, np.float32))
    s = OpBuilder(g).add("x", "c")
    g.set_outputs([s, s])
    with pytest.raises(OnnxExportError, match="lists an output twice"):
        export_graph(g)
    g2 = Graph("g2")
    g2.add_input("x", TensorType("float32", ("n", 6)))
    g2.set_outputs([OpBuilder(g2).reshape("x", shape=("m", "n", 2))])
    with pytest.raises(OnnxExportError, match="free dimension 'm' is not a dimension of any graph input"):
        export_graph(g2)


def test_writes_the_file(tmp_path):
    model = qa_model()
    path = tmp_path / "sub" / "qa.onnx"
    proto = graphc.onnx.export(model, path)
    assert path.is_file()
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == proto.SerializeToString()
    onnx.checker.check_model(str(path), full_check=True)


def test_exports_an_ir_graph_and_optimize_chooses_the_graph():
    x = Input(shape=(6, 6, 2), name="img")
    y = layers.Conv2D(3, 3, padding="same", name="c1")(x)
    y = layers.Activation("relu")(layers.BatchNormalization(name="bn")(y))
    y = layers.Conv2D(3, 3, padding="same", activation="relu", name="c2")(y)
    model = Model(x, y)
    plain = graphc.onnx.export(model, optimize=False)
    assert "BatchNormalization" in [n.op_type for n in plain.graph.node]
    graph = graphc.lower(model)
    assert graphc.onnx.export(graph, optimize=False).graph.node == plain.graph.node
    fused = [n.op_type for n in graphc.onnx.export(model).graph.node]
    assert "BatchNormalization" not in fused  # folded into the conv by the optimizer
    # NHWC in and out, one transpose on each side: the pairs between the convolutions cancel
    assert fused.count("Transpose") == 2 and fused.count("Conv") == 2, fused


def test_conv_chain_keeps_only_the_boundary_transposes(rng):
    x = Input(shape=(None, None, 3), name="img")
    y = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    y = layers.MaxPooling2D(2, padding="same")(y)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    y = layers.Conv2D(4, 3, padding="same")(y)
    model = Model(x, y)
    types = [n.op_type for n in graphc.onnx.export(model).graph.node]
    assert types.count("Transpose") == 2, types
    for hw in ((9, 7), (4, 12)):
        report = graphc.onnx.verify(model, rng.standard_normal((2, *hw, 3)).astype(np.float32))
        assert report.ok, report


def test_canceled_transposes_stay_when_the_value_is_requested(rng):
    x = Input(shape=(5, 5, 2))
    y = layers.Conv2D(2, 3, padding="same", name="c1")(x)
    y = layers.Conv2D(2, 3, padding="same", name="c2")(y)
    model = Model(x, y)
    graph = graphc.onnx.to_graph(model)
    every = [o for op in graph.ops() for o in op.outputs]
    proto = export_graph(graph, keep=every)
    assert [o.name for o in proto.graph.output] == graph.outputs + [v for v in every if v not in graph.outputs]
    report = verify_graph(graph, {"input_layer": rng.standard_normal((2, 5, 5, 2)).astype(np.float32)},
                          per_layer=True)
    assert report.ok and len(report.layers) == len(every), report


def test_dimension_expressions_floor_like_python(rng):
    """A reshape target computed from the input shape: ONNX's truncating Div is corrected to floor."""
    g = Graph("g")
    g.add_input("x", TensorType("float32", ("n", "m")))
    b = OpBuilder(g)
    flat = b.reshape("x", shape=(-1,))
    # a = (m - 5) // 2 + 3 is 1 for m = 2 (Python floors -1.5 to -2); truncation would give 2
    g.set_outputs([b.reshape(flat, shape=("n * ((m - 5) // 2 + 3)", "m // ((m - 5) // 2 + 3)"))])
    for n, m in ((2, 2), (3, 6), (1, 2)):
        x = rng.standard_normal((n, m)).astype(np.float32)
        report = verify_graph(g, {"x": x})
        assert report.ok, report
