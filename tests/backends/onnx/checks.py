"""Checks shared by the ONNX backend tests: the ONNX checker and shape inference against graphc."""

from __future__ import annotations

import onnx

from graphc.ir.graph import Graph


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def check_model(model: onnx.ModelProto, graph: Graph) -> None:
    """The full ONNX checker passes, and ONNX shape inference alone (without the value_info the
    exporter declares) knows every dimension that graphc knows as an integer."""
    onnx.checker.check_model(model, full_check=True)
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for n in model.graph.node for o in n.output}
    for value in graph.values.values():
        if value.kind != "op" or value.name not in produced:
            continue
        vi = known.get(value.name)
        assert vi is not None, f"ONNX shape inference knows nothing about {value.name!r} ({value.type})"
        got = _dims(vi)
        assert got is not None and len(got) == value.type.rank, \
            f"{value.name!r}: ONNX infers shape {got}, graphc {value.type}"
        for axis, (d, g) in enumerate(zip(value.type.shape, got)):
            if isinstance(d, int):
                assert g == d, f"{value.name!r} axis {axis}: ONNX infers {g!r}, graphc knows {d} ({value.type})"
