"""Appending ops to a graph with their types inferred from the registry.

``OpBuilder(graph, layer="dense")`` is how the front end, passes and autodiff create ops:
``b.matmul(x, w)`` or ``b.emit("conv", x, w, strides=(2, 2))`` checks the attributes,
runs the op's shape rule and records the layer the op came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.graph import Graph
from graphc.ops.registry import ShapeError, get


class OpBuilder:
    """Emits typed ops into ``graph``; every op records ``layer`` as its provenance."""

    def __init__(self, graph: Graph, layer: str | None = None):
        self.graph = graph
        self.layer = layer

    def emit(self, op_type: str, *inputs: str, name: str | None = None, **attrs: Any):
        """Add one op; returns its output value name (a tuple for multi-output ops)."""
        opdef = get(op_type)
        attrs = opdef.resolve_attrs(attrs)
        in_types = [self.graph.type_of(v) for v in inputs]
        try:
            out_types = opdef.infer_types(in_types, attrs)
        except ShapeError as exc:
            where = f"layer {self.layer!r}" if self.layer else f"op {op_type!r}"
            shapes = ", ".join(str(t) for t in in_types)
            raise ShapeError(f"{where}: {exc} (inputs: {shapes})") from None
        op = self.graph.add_op(op_type, inputs, out_types, attrs, layer=self.layer, name=name)
        return op.outputs[0] if len(op.outputs) == 1 else tuple(op.outputs)

    def constant(self, array: np.ndarray, name: str = "const") -> str:
        return self.graph.add_constant(self.graph.unique_name(name), np.asarray(array), layer=self.layer)

    def __getattr__(self, op_type: str):
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        get(op_type)

        def call(*inputs: str, **attrs: Any):
            return self.emit(op_type, *inputs, **attrs)

        return call
