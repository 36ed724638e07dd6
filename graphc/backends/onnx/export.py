"""Export a graphc IR graph to an ONNX model.

Each op is translated by its own ``to_onnx`` facet (see :mod:`.context`), in topological
order. Graph inputs and outputs keep their names (the Keras names after lowering), free
dimensions become named dynamic axes (``batch``, ``text_len``), weights become
initializers named after their layers, and every IR value gets a ``value_info`` with
graphc's shape, so ``onnx.checker.check_model(full_check=True)`` cross-checks graphc's
shape rules against ONNX's. Layout transposes that cancel (``NCHW -> NHWC -> NCHW``
between two convolutions) are removed before the model is assembled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphc.backends.onnx.context import EmitContext, GraphEmitter, OnnxExportError, tensor_dtype, where
from graphc.backends.onnx.opset import check_opset
from graphc.ir import dims as _dims
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops.registry import REGISTRY


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    """An ONNX ValueInfo with graphc's type: ints stay ints, symbolic dims become named dims."""
    shape = [d if isinstance(d, int) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, tensor_dtype(t.dtype), shape)


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def _cancel_transposes(nodes: list[onnx.NodeProto], protected: set[str]) -> list[onnx.NodeProto]:
    """Fold Transpose(Transpose(x)) into one Transpose, or into ``x`` when the perms cancel."""
    producer: dict[str, onnx.NodeProto] = {}
    rename: dict[str, str] = {}
    out: list[onnx.NodeProto] = []
    for node in nodes:
        if rename:
            for k, name in enumerate(node.input):
                if name in rename:
                    node.input[k] = rename[name]
        if node.op_type == "Transpose" and node.input[0] in producer and _perm(node) is not None:
            first = producer[node.input[0]]
            p1, p2 = _perm(first), _perm(node)
            perm = [p1[p] for p in p2]
            if perm == sorted(perm) and node.output[0] not in protected:
                rename[node.output[0]] = first.input[0]
                continue
            node.input[0] = first.input[0]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("perm", perm))
        if node.op_type == "Transpose" and _perm(node) is not None:
            producer[node.output[0]] = node
        out.append(node)
    return out


def _live_nodes(nodes: list[onnx.NodeProto], needed: set[str]) -> list[onnx.NodeProto]:
    keep = []
    needed = set(needed)
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    return keep[::-1]


def export_graph(graph: Graph, opset: int | None = None, *, keep: Iterable[str] = (),
                 doc: str = "") -> onnx.ModelProto:
    """The ONNX model of ``graph``; ``keep`` names extra IR values to expose as graph outputs."""
    opset = check_opset(opset)
    if not graph.outputs:
        raise OnnxExportError(f"graph {graph.name!r} has no outputs; an ONNX model needs at least one")
    if len(set(graph.outputs)) != len(graph.outputs):
        raise OnnxExportError(f"graph {graph.name!r} lists an output twice ({graph.outputs}); ONNX outputs "
                              "must be distinct values")
    for name in graph.outputs:
        if graph.values[name].kind != "op":
            raise OnnxExportError(f"graph output {name!r} is a graph {graph.values[name].kind}, not computed by "
                                  "an op; ONNX needs a node to produce each output")
    em = GraphEmitter(graph, opset)
    for op in graph.ops():
        opdef = REGISTRY.get(op.type)
        if opdef is None or opdef.to_onnx is None:
            what = "a training-only op" if opdef is not None and opdef.training_only else "an op"
            raise OnnxExportError(f"{where(op)} cannot be exported to ONNX: graphc op {op.type!r} is {what} "
                                  "without an ONNX mapping")
        ctx = EmitContext(em, op)
        try:
            opdef.to_onnx(ctx, op)
        except OnnxExportError:
            raise
        except Exception as exc:
            raise OnnxExportError(f"{where(op)}: ONNX export failed: {exc}") from exc
        missing = [o for o in op.outputs if o not in em.defined]
        if missing:
            raise OnnxExportError(f"{where(op)}: its ONNX mapping did not produce {missing}")

    keep = [v for v in keep if graph.values[v].kind == "op" and v not in graph.outputs]
    outputs = list(graph.outputs) + keep
    nodes = _cancel_transposes(em.nodes, set(outputs))
    nodes = _live_nodes(nodes, set(outputs))
    used = {i for n in nodes for i in n.input if i}
    produced = {o for n in nodes for o in n.output}

    initializers = []
    for name in sorted(used):
        if name in em.initializers:
            initializers.append(numpy_helper.from_array(np.asarray(em.initializers[name]), name))
        elif name in graph.constants:
            initializers.append(numpy_helper.from_array(np.asarray(graph.constants[name]), name))
    inputs = [value_info(n, graph.type_of(n)) for n in graph.inputs]
    outs = [value_info(n, graph.type_of(n)) for n in outputs]
    infos = [value_info(v.name, v.type) for v in graph.values.values()
             if v.kind == "op" and v.name in produced and v.name not in outputs]
    onnx_graph = helper.make_graph(nodes, graph.name, inputs, outs, initializer=initializers, value_info=infos)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="graphc",
                              producer_version=_version(), doc_string=doc or f"graphc model {graph.name!r}")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    free = sorted({s for n in graph.inputs for d in graph.type_of(n).shape for s in _dims.symbols(d)})
    helper.set_model_props(model, {"graphc.free_dims": ",".join(free)})
    return model


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("graphc")
    except Exception:
        return "0"


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path
