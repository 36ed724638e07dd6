"""Folding chains of linear maps: 1x1 convolutions / dense layers with nothing nonlinear between.

After ``conv1x1_to_matmul`` a 1x1 convolution is a matmul, so these cover 1x1 convs, dense
layers and the per-channel ``scale_shift`` a lone BatchNorm became. With ``y = x A + c``
used only by ``z = y W (+ b)``, ``z = x (A W) + (c W + b)``:

- ``matmul(bias_add?(matmul(x, W1), b1), W2)`` -> ``bias_add(matmul(x, W1 @ W2), b1 @ W2)``;
  only when it does not add work (``K*N <= K*M + M*N`` for W1 (K, M), W2 (M, N)), unless
  aggressive (``fold_linear_chains_aggressive``, level 3);
- ``matmul(scale_shift(x, s, t), W)`` -> ``bias_add(matmul(x, s[:, None] * W), t @ W)``, also
  through a flattening ``reshape`` between them (the Conv -> BN -> Flatten -> Dense idiom,
  where ``s`` and ``t`` repeat once per pixel);
- ``conv(scale_shift(x, s, t), W)`` with no padding (padding would see the shift at the
  border) -> ``bias_add(conv(x, W * s), sum_taps(t W))``, grouped convolutions included;
- ``bias_add(bias_add(y, b1), b2)`` -> ``bias_add(y, b1 + b2)``.

Slices on axes other than the channels (a strided 1x1 convolution's subsampling) may sit
between the two maps: they commute with a map on the channels and move to its input.

Products are computed in float64 and rounded once to the weights' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ir import dims
from graphc.ir.graph import Graph, Op
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import add_constant, emit, is_constant, replace_value, single_use


@dataclass
class _Affine:
    """``y = x A + c`` with A a matrix (K, M) or, if ``diag``, a vector of per-channel scales."""

    x: str
    a: np.ndarray
    c: np.ndarray | None
    diag: bool


def _const(graph: Graph, v: str) -> np.ndarray:
    return graph.constants[v].astype(np.float64)


def _last_axis(graph: Graph, op: Op) -> bool:
    rank = graph.type_of(op.inputs[0]).rank
    return op.attrs.get("axis", -1) % rank == rank - 1


def _affine_of(graph: Graph, y: str) -> _Affine | None:
    """``y`` as an affine map of one value, if its producers are constant linear ops used only here."""
    if not single_use(graph, y):
        return None
    op = graph.producer(y)
    if op is None:
        return None
    if op.type == "scale_shift" and _last_axis(graph, op) and all(is_constant(graph, v) for v in op.inputs[1:]):
        return _Affine(op.inputs[0], _const(graph, op.inputs[1]), _const(graph, op.inputs[2]), diag=True)
    bias = None
    if op.type == "bias_add" and _last_axis(graph, op) and is_constant(graph, op.inputs[1]):
        bias = _const(graph, op.inputs[1])
        if not single_use(graph, op.inputs[0]):
            return None
        op = graph.producer(op.inputs[0])
        if op is None:
            return None
    if op.type == "matmul" and is_constant(graph, op.inputs[1]) and graph.type_of(op.inputs[1]).rank == 2:
        return _Affine(op.inputs[0], _const(graph, op.inputs[1]), bias, diag=False)
    return None


def _flatten_of(graph: Graph, y: str) -> tuple[_Affine, Op] | None:
    """``y = reshape(scale_shift(x))`` flattening (N, ..., C) to (N, P): the map and the reshape."""
    op = graph.producer(y)
    if op is None or op.type != "reshape" or not single_use(graph, y):
        return None
    inner = _affine_of(graph, op.inputs[0])
    if inner is None or not inner.diag:
        return None
    xt, yt = graph.type_of(op.inputs[0]), graph.type_of(y)
    rest = xt.shape[1:]
    if yt.rank != 2 or not dims.same(yt.shape[0], xt.shape[0]) or not all(isinstance(d, int) for d in rest):
        return None
    pixels = int(np.prod(rest[:-1], dtype=np.int64))
    if yt.shape[1] != pixels * rest[-1]:
        return None
    tiled = _Affine(inner.x, np.tile(inner.a, pixels), np.tile(inner.c, pixels), diag=True)
    return tiled, op


def _spatial_slices(graph: Graph, y: str) -> list[Op]:
    """The chain of single-use slices on axes other than the last that produces ``y`` (outermost first)."""
    out: list[Op] = []
    while True:
        op = graph.producer(y)
        if op is None or op.type != "slice" or not single_use(graph, y):
            return out
        if op.attrs["axis"] % graph.type_of(y).rank == graph.type_of(y).rank - 1:
            return out
        out.append(op)
        y = op.inputs[0]


def _emit_affine(graph: Graph, x: str, w: np.ndarray, bias: np.ndarray | None, dtype, like: Op,
                 conv_attrs: dict | None = None) -> str:
    wc = add_constant(graph, w.astype(dtype, copy=False), f"{like.inputs[1]}_folded", like.layer)
    if conv_attrs is None:
        y = emit(graph, "matmul", x, wc, layer=like.layer, name=like.layer)
    else:
        y = emit(graph, "conv", x, wc, layer=like.layer, name=like.layer, **conv_attrs)
    if bias is not None:
        bc = add_constant(graph, bias.astype(dtype), f"{like.layer or 'linear'}_bias_folded", like.layer)
        y = emit(graph, "bias_add", y, bc, layer=like.layer)
    return y


def _fold_matmul(graph: Graph, op: Op, aggressive: bool) -> str | None:
    y, w = op.inputs
    if not is_constant(graph, w) or graph.type_of(w).rank != 2:
        return None
    dtype = graph.constants[w].dtype
    slices = _spatial_slices(graph, y)
    if slices:
        y = slices[-1].inputs[0]
    inner = _affine_of(graph, y)
    if inner is None and slices:
        return None
    if inner is None:
        flat = _flatten_of(graph, y)
        if flat is None:
            return None
        inner, reshape = flat
        x = emit(graph, "reshape", inner.x, layer=reshape.layer, **reshape.attrs)
        note("scale_shift + flatten folded into matmul")
    elif inner.diag:
        x = inner.x
        note("scale_shift folded into matmul")
    else:
        k, m = inner.a.shape
        n = graph.type_of(w).shape[1]
        if not aggressive and k * n > k * m + m * n:
            return None
        x = inner.x
        note("matmul chain folded")
    for sl in reversed(slices):  # a map on channels commutes with subsampling pixels
        x = emit(graph, "slice", x, layer=sl.layer, **sl.attrs)
    w2 = _const(graph, w)
    if inner.diag:  # one rounding per element: scale in the weights' own dtype
        new_w = inner.a.astype(dtype)[:, None] * graph.constants[w]
    else:
        new_w = inner.a @ w2
    bias = inner.c @ w2 if inner.c is not None else None
    return _emit_affine(graph, x, new_w, bias, dtype, op)


def _fold_conv(graph: Graph, op: Op) -> str | None:
    y, w = op.inputs
    pads = op.attrs.get("pads")
    if not is_constant(graph, w) or (pads and any(p != 0 for pair in pads for p in pair)):
        return None
    inner = _affine_of(graph, y)
    if inner is None or not inner.diag:
        return None
    wt = _const(graph, w)
    groups = op.attrs.get("groups") or 1
    cg, out = wt.shape[-2], wt.shape[-1]
    og = out // groups
    # Input channel read by kernel slot (j, o): (o // og) * cg + j.
    channel = (np.arange(out)[None, :] // og) * cg + np.arange(cg)[:, None]
    new_w = wt * inner.a[channel]
    bias = (wt * inner.c[channel]).reshape(-1, out).sum(axis=0)
    note("scale_shift folded into conv")
    attrs = {k: op.attrs.get(k) for k in ("strides", "dilations", "pads", "groups")}
    return _emit_affine(graph, inner.x, new_w, bias, graph.constants[w].dtype, op, attrs)


def _merge_biases(graph: Graph, op: Op) -> str | None:
    y, b2 = op.inputs
    inner = graph.producer(y)
    if (inner is None or inner.type != "bias_add" or not single_use(graph, y) or not _last_axis(graph, op)
            or not _last_axis(graph, inner) or not is_constant(graph, b2) or not is_constant(graph, inner.inputs[1])):
        return None
    b = graph.constants[inner.inputs[1]].astype(np.float64) + _const(graph, b2)
    bc = add_constant(graph, b.astype(graph.constants[b2].dtype), f"{op.layer or 'bias'}_bias_merged", op.layer)
    note("bias_add pair merged")
    return emit(graph, "bias_add", inner.inputs[0], bc, layer=op.layer)


def _run(graph: Graph, aggressive: bool) -> bool:
    changed = False
    for op in graph.ops():
        if not graph.has_op(op.id):
            continue
        working_on(op)
        if op.type == "matmul":
            new = _fold_matmul(graph, op, aggressive)
        elif op.type == "conv":
            new = _fold_conv(graph, op)
        elif op.type == "bias_add":
            new = _merge_biases(graph, op)
        else:
            continue
        if new is not None:
            replace_value(graph, op.outputs[0], new)
            changed = True
    working_on(None)
    return changed


@register_pass("fold_linear_chains")
def fold_linear_chains(graph: Graph) -> bool:
    """Fold chains of linear 1x1 convs/dense/scale_shift (when that does not add work)."""
    return _run(graph, aggressive=False)


@register_pass("fold_linear_chains_aggressive")
def fold_linear_chains_aggressive(graph: Graph) -> bool:
    """Fold every chain of linear 1x1 convs/dense/scale_shift, even when that adds work."""
    return _run(graph, aggressive=True)
