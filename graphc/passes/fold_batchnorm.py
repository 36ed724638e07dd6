"""BatchNorm folding for inference graphs.

An inference ``batch_norm(y; gamma, beta, mean, variance, epsilon)`` along the channel axis
is the affine map ``y * s + t`` with ``s = gamma / sqrt(variance + epsilon)`` and
``t = beta - mean * s``. When ``y`` comes from a product with no nonlinearity after it,
``y = x (*) W + b`` (matmul, conv, depthwise or separable conv, with or without a bias),
the map folds into the weights: ``W' = W * s`` on the output-channel axis and
``b' = b * s + t``. The BatchNorm and the old bias disappear; the product stays in its
unfused form (``conv`` + ``bias_add``) so later passes still recognise it.

A BatchNorm whose input is not such a product becomes one ``scale_shift(x, s, t)``; the
linear-chain pass may then fold it forward into a following matmul.

Statistics are combined in float64 and rounded once to the weights' dtype.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph, Op
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import add_constant, emit, is_constant, replace_value, single_use
from graphc.passes.products import Product, emit_product, kind, product_of


def bn_affine(graph: Graph, op: Op) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) in float64 of a batch_norm op with constant statistics, else None."""
    _, gamma, beta, mean, var = op.inputs
    if not all(is_constant(graph, v) for v in (gamma, beta, mean, var)):
        return None
    c = {v: graph.constants[v].astype(np.float64) for v in (gamma, beta, mean, var)}
    scale = c[gamma] / np.sqrt(c[var] + float(op.attrs.get("epsilon", 1e-3)))
    return scale, c[beta] - c[mean] * scale


def _foldable_source(graph: Graph, x: str) -> tuple[Product, str | None, bool] | None:
    """The linear product feeding ``x`` (through at most one constant bias_add), its bias, and
    whether it is an unfused ``matmul``/``conv``."""
    bias = None
    src = x
    producer = graph.producer(x)
    if producer is not None and producer.type == "bias_add" and single_use(graph, x):
        rank = graph.type_of(x).rank
        if producer.attrs.get("axis", -1) % rank == rank - 1 and is_constant(graph, producer.inputs[1]):
            src, bias = producer.inputs
    if not single_use(graph, src):
        return None
    p = product_of(graph, src)
    if p is None or not p.linear or not is_constant(graph, p.weight):
        return None
    if bias is not None and p.bias is not None:
        return None
    if p.bias is not None:
        if not is_constant(graph, p.bias):
            return None
        bias = p.bias
    return p, bias, graph.producer(src).type in ("matmul", "conv")


@register_pass("fold_batchnorm")
def fold_batchnorm(graph: Graph) -> bool:
    """Fold inference BatchNorm into the preceding conv/dense, or make it one scale_shift."""
    changed = False
    # A shared layer appears once per call: fold its weights once (same inputs -> same constants).
    folded: dict[tuple, tuple[str, str]] = {}
    for op in graph.ops():
        if op.type != "batch_norm" or not graph.has_op(op.id):
            continue
        working_on(op)
        affine = bn_affine(graph, op)
        if affine is None:
            continue
        scale, shift = affine
        x = op.inputs[0]
        xt = graph.type_of(x)
        axis = op.attrs.get("axis", -1) % xt.rank
        source = _foldable_source(graph, x) if axis == xt.rank - 1 else None
        if source is not None:
            p, bias, raw = source
            key = (p.weight, bias, *op.inputs[1:], op.attrs.get("epsilon"))
            if key not in folded:
                w = graph.constants[p.weight]
                b = np.zeros(w.shape[-1]) if bias is None else graph.constants[bias].astype(np.float64)
                folded[key] = (
                    add_constant(graph, w * scale.astype(w.dtype), f"{p.weight}_bn", p.layer),
                    add_constant(graph, (b * scale + shift).astype(w.dtype), f"{p.layer or 'bn'}_bias_bn", p.layer))
            new_w, new_b = folded[key]
            main = list(p.main)
            main[p.weight_index] = new_w
            if raw:
                y = emit_product(graph, p.with_(main=main, bias=None), plain=True)
                y = emit(graph, "bias_add", y, new_b, layer=p.layer)
            else:
                y = emit_product(graph, p.with_(main=main, bias=new_b))
            note(f"batch_norm folded into {kind(graph, p)}")
        else:
            dtype = xt.dtype
            s = add_constant(graph, scale.astype(dtype), f"{op.layer or 'bn'}/scale", op.layer)
            t = add_constant(graph, shift.astype(dtype), f"{op.layer or 'bn'}/shift", op.layer)
            y = emit(graph, "scale_shift", x, s, t, layer=op.layer, name=op.layer, axis=axis)
            note("batch_norm -> scale_shift")
        replace_value(graph, op.outputs[0], y)
        changed = True
    working_on(None)
    return changed
