"""Constant folding: an op whose inputs are all constants becomes the constant it computes.

The value is computed by the op's NumPy reference (the same oracle every backend is
checked against), so folding cannot change a result. Typical catches: the reshape of a
depthwise kernel into grouped-convolution layout, transposes and products of weights that
other passes emit. An op is left alone when its result type is not fully static, when the
reference's result does not match the declared type, or when folding would blow a small
constant up into a large one (a broadcast). A quantized weight's dequantize stays (QDQ format).
"""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops.registry import get
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import add_constant, is_constant, replace_value

# Folding may grow data up to this many bytes beyond the inputs' size.
MAX_GROWTH_BYTES = 1 << 20


def _foldable(graph: Graph, op) -> bool:
    if op.type == "dequantize_linear":
        return False  # quantized weights stay int8 (the QDQ format): backends fold them into integer kernels
    if not op.inputs or not all(is_constant(graph, v) for v in op.inputs):
        return False
    if any(o in graph.outputs for o in op.outputs):
        return False  # a graph output stays an op result
    out_types = [graph.values[o].type for o in op.outputs]
    if not all(t.is_static for t in out_types):
        return False
    in_bytes = sum(graph.constants[v].nbytes for v in op.inputs)
    out_bytes = sum(t.nbytes() for t in out_types)
    return out_bytes <= in_bytes + MAX_GROWTH_BYTES


@register_pass("constant_fold")
def constant_fold(graph: Graph) -> bool:
    """Evaluate ops whose inputs are all constants."""
    folded = 0
    for op in graph.ops():
        if not graph.has_op(op.id) or not _foldable(graph, op):
            continue
        working_on(op)
        opdef = get(op.type)
        attrs = opdef.resolve_attrs(op.attrs)
        if opdef.uses_dims:
            attrs["bindings"] = {}
        result = opdef.reference(*[graph.constants[v] for v in op.inputs], **attrs)
        results = result if isinstance(result, tuple) else (result,)
        arrays = [np.asarray(r) for r in results]
        if len(arrays) != len(op.outputs) or any(
                TensorType.of(a) != graph.values[o].type for a, o in zip(arrays, op.outputs)):
            continue
        for out, array in zip(list(op.outputs), arrays):
            replace_value(graph, out, add_constant(graph, array, f"{out}_folded", op.layer))
        folded += 1
        note(f"{op.type} folded")
    working_on(None)
    return folded > 0
