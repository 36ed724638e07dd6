"""Sibling products that read the same tensor merge into one wider product plus slices.

TVM calls this CombineParallelConv2D. Inception-style branches often start with several
1x1 convolutions of the same input; after ``conv1x1_to_matmul`` and epilogue fusion they
are ``fused_matmul`` ops reading one value. Products are merged when they read the same
input with constant weights of the same contraction size, and have the same epilogue
(activation, with or without bias; no residual) and, for convolutions, the same kernel
window, strides, dilations and padding with one group. The merged op multiplies by the
weights concatenated on the output-channel axis; each original result becomes a
``slice`` of its channels (a strided view for backends, no copy). One wide GEMM uses the
machine better than several narrow ones and reads the shared input once.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph, Op
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import add_constant, emit, is_constant, replace_value
from graphc.passes.products import Product, as_product, emit_product, kind


def _key(graph: Graph, op: Op, p: Product) -> tuple | None:
    if p.fused_type not in ("fused_matmul", "fused_conv") or p.residual is not None:
        return None
    if op.inputs[0] != p.main[0] or not is_constant(graph, p.weight):
        return None
    if p.bias is not None and not is_constant(graph, p.bias):
        return None
    w = graph.type_of(p.weight)
    if p.fused_type == "fused_conv" and (p.conv.get("groups") or 1) != 1:
        return None
    conv = tuple(sorted((k, repr(v)) for k, v in p.conv.items()))
    return (p.fused_type, w.shape[:-1], w.dtype, conv, p.bias is not None, p.activation, p.activation_attrs)


@register_pass("merge_sibling_products")
def merge_sibling_products(graph: Graph) -> bool:
    """Merge matmuls/convs that read the same tensor with the same epilogue into one wider op."""
    groups: dict[tuple, list[tuple[Op, Product]]] = {}
    for op in graph.ops():
        p = as_product(graph, op)
        if p is None:
            continue
        key = _key(graph, op, p)
        if key is not None:
            groups.setdefault((op.inputs[0],) + key, []).append((op, p))
    changed = False
    for members in groups.values():
        if len(members) < 2:
            continue
        first_op, first = members[0]
        working_on(first_op)
        layers = [op.layer or op.id for op, _ in members]
        layer = "+".join(dict.fromkeys(layers))
        w = np.concatenate([graph.constants[p.weight] for _, p in members], axis=-1)
        merged = first.with_(main=[first.main[0], add_constant(graph, w, f"{layer}_kernel", layer)], layer=layer)
        if first.bias is not None:
            b = np.concatenate([graph.constants[p.bias] for _, p in members])
            merged = merged.with_(bias=add_constant(graph, b, f"{layer}_bias", layer))
        y = emit_product(graph, merged, plain=True)
        start = 0
        for op, p in members:
            n = graph.type_of(p.weight).shape[-1]
            part = emit(graph, "slice", y, layer=op.layer, axis=-1, start=start, stop=start + n, step=1)
            replace_value(graph, op.outputs[0], part)
            start += n
        note(f"{len(members)} sibling {kind(graph, first)}s merged")
        changed = True
    working_on(None)
    return changed
