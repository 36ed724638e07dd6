"""1x1 convolutions as matrix multiplies over channels-last pixels.

A 1x1 convolution with no padding and one group computes, at every output pixel, the
input pixel's channel vector times the (C, O) kernel: on NHWC data that is exactly
``matmul(x, W.reshape(C, O))`` with the pixels as rows. A strided one reads only every
``s``-th pixel on each spatial axis: the rewrite reads a ``slice(..., step=s)`` of the
input, which is a strided *view* (the memory planner gives it no buffer of its own, and
the reference interpreter's NumPy slice copies nothing), not a copied tensor.
"""

from __future__ import annotations

from graphc.ir.graph import Graph, Op
from graphc.ops.conv import per_axis
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import add_constant, emit, is_constant, replace_value


def is_conv1x1(graph: Graph, op: Op) -> bool:
    """A ``conv`` with a 1x1 kernel, one group and no padding."""
    if op.type != "conv":
        return False
    w = graph.type_of(op.inputs[1])
    nsp = w.rank - 2
    pads = op.attrs.get("pads") or ((0, 0),) * nsp
    return (w.is_static and all(k == 1 for k in w.shape[:nsp]) and (op.attrs.get("groups") or 1) == 1
            and all(p == 0 for pair in pads for p in pair))


@register_pass("conv1x1_to_matmul")
def conv1x1_to_matmul(graph: Graph) -> bool:
    """Rewrite 1x1 convolutions (strided or not) as matmuls over pixels."""
    changed = False
    matrices: dict[str, str] = {}  # kernel -> its (C, O) matrix, made once for shared layers
    for op in graph.ops():
        if not graph.has_op(op.id) or not is_conv1x1(graph, op):
            continue
        working_on(op)
        x, w = op.inputs
        wt = graph.type_of(w)
        nsp = wt.rank - 2
        strides = per_axis(op.attrs.get("strides"), nsp, "strides", "conv")
        for axis, s in enumerate(strides):
            if s > 1:
                x = emit(graph, "slice", x, layer=op.layer, axis=axis + 1, start=0, stop=None, step=s)
        c, o = wt.shape[-2], wt.shape[-1]
        if is_constant(graph, w):
            if w not in matrices:
                matrices[w] = add_constant(graph, graph.constants[w].reshape(c, o), f"{w}_2d", op.layer)
            w2 = matrices[w]
        else:
            w2 = emit(graph, "reshape", w, layer=op.layer, shape=(c, o))
        y = emit(graph, "matmul", x, w2, layer=op.layer, name=op.layer)
        replace_value(graph, op.outputs[0], y)
        note("strided conv1x1 -> matmul" if any(s > 1 for s in strides) else "conv1x1 -> matmul")
        changed = True
    working_on(None)
    return changed
