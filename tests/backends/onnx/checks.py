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


def randomize_weights(model, rng) -> None:
    """Give every weight a random value near its initial one (biases and BatchNorm statistics
    stop being zeros and ones, so a swapped or misplaced parameter shows in the numbers)."""
    for v in model.weights:
        a = v.value
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, a.shape).astype(a.dtype))
        else:
            scale = 0.1 * (float(a.std()) or 1.0)
            v.assign((a + scale * rng.standard_normal(a.shape)).astype(a.dtype))


def assert_verifies(model, inputs, *, optimize=True, what: str = "") -> None:
    """graphc.onnx.verify passes at the issue's tolerances (rtol 1e-4, atol 1e-5)."""
    import graphc.onnx

    report = graphc.onnx.verify(model, inputs, optimize=optimize)
    assert report.ok, f"{what} optimize={optimize}\n{report}"
