"""The work of one IR op at concrete shapes: floating-point operations and bytes moved.

FLOPs follow the usual convention, from the op's shapes alone:

- a multiply-add counts 2: ``matmul`` / ``fused_matmul`` ``2·K`` per output element; ``conv`` /
  ``fused_conv`` ``2·prod(kernel window)·C_in/groups`` per output element; ``conv_transpose``
  ``2·prod(window)·C_out/groups`` per *input* element; ``fused_separable_conv`` its depthwise and
  pointwise products; recurrent layers ``2·(input + units)·gates·units`` per sample and step;
- a fused epilogue adds one per output element for the bias, for each activation other than
  ``linear`` and for the residual add;
- pooling counts one per output element and window position; elementwise, broadcasting and
  normalizing ops one per output element; reductions one per input element;
- ops that only move data (reshape, transpose, concat, slice, pad, gather, ...) count 0.

Bytes moved are the compulsory traffic: every distinct input (weights included) read once and
every output written once, at the tensors' sizes (a gather reads its ids and the rows it
gathers). Caches may keep some of it from memory and kernels may touch some of it twice; the
figure is the lower bound a roofline is drawn with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod
from typing import Any

import numpy as np

from graphc.ir import dims
from graphc.ir.graph import Graph

Shape = tuple[int, ...]

_MOVES_DATA = {"reshape", "transpose", "concat", "slice", "slice_grad", "pad", "gather", "squeeze", "expand_dims",
               "identity", "cast", "one_hot", "resize", "reverse_time", "broadcast_like", "num_elements"}
_REDUCTIONS = {"reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "argmax", "sum_to"}
_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def _epilogue(attrs: Mapping[str, Any], out_elems: int) -> int:
    extra = int(bool(attrs.get("has_bias"))) + int(bool(attrs.get("has_residual")))
    for which in ("activation", "post_activation"):
        extra += int(attrs.get(which, "linear") != "linear")
    return extra * out_elems


def op_flops(op_type: str, attrs: Mapping[str, Any], ins: Sequence[Shape], outs: Sequence[Shape]) -> int | None:
    """FLOPs of one run of an op (see the module docstring); None for an op without a cost rule."""
    out_elems = prod(outs[0]) if outs else 0
    if op_type in ("matmul", "fused_matmul"):
        return 2 * out_elems * ins[0][-1] + _epilogue(attrs, out_elems)
    if op_type in ("conv", "fused_conv"):
        kernel = ins[1]  # (*window, C_in / groups, C_out)
        return 2 * out_elems * prod(kernel[:-1]) + _epilogue(attrs, out_elems)
    if op_type == "fused_separable_conv":
        depthwise, pointwise = ins[1], ins[2]  # (*window, 1, C*M), (C*M, C_out)
        mid = prod(outs[0][:-1]) * depthwise[-1]
        return 2 * mid * prod(depthwise[:-2]) + 2 * out_elems * pointwise[0] + _epilogue(attrs, out_elems)
    if op_type == "conv_transpose":
        kernel = ins[1]  # (*window, C_out / groups, C_in)
        return 2 * prod(ins[0]) * prod(kernel[:-2]) * kernel[-2]
    if op_type in _GATES:
        x, kernel, recurrent = ins[0], ins[1], ins[2]  # (B, T, I), (I, G*U), (U, G*U)
        return 2 * x[0] * x[1] * (kernel[0] + recurrent[0]) * kernel[1]
    if op_type in ("max_pool", "avg_pool"):
        return out_elems * prod(attrs.get("kernel") or (1,))
    if op_type in _MOVES_DATA:
        return 0
    if op_type in _REDUCTIONS:
        return prod(ins[0]) if ins else 0
    if op_type.endswith("_grad") or op_type.startswith("random_"):
        return None
    return out_elems


def op_bytes(in_arrays: Sequence[tuple[Shape, str]], out_arrays: Sequence[tuple[Shape, str]]) -> int:
    """Compulsory traffic: each (shape, dtype) read or written once."""
    return sum(prod(s) * np.dtype(dt).itemsize for s, dt in list(in_arrays) + list(out_arrays))


def concrete(shape, bindings: Mapping[str, int]) -> Shape:
    """A shape with its free dims (names or expressions) evaluated."""
    return tuple(d if isinstance(d, int) else int(dims.evaluate(d, bindings)) for d in shape)


def bind_free_dims(graph: Graph, arrays: Sequence[np.ndarray]) -> dict[str, int]:
    """Free-dim values given by input arrays (graph input order)."""
    bindings: dict[str, int] = {}
    for v, a in zip(graph.inputs, arrays):
        for d, n in zip(graph.values[v].type.shape, np.shape(a)):
            if isinstance(d, str) and d.isidentifier():
                bindings[d] = int(n)
    return bindings


def graph_op_costs(graph: Graph, bindings: Mapping[str, int]) -> list[tuple[int | None, int]]:
    """(FLOPs, bytes) of every op of ``graph`` in ``graph.ops()`` order."""
    from graphc.ops.registry import get

    costs = []
    for op in graph.ops():
        ins = [(concrete(graph.values[v].type.shape, bindings), graph.values[v].type.dtype)
               for v in dict.fromkeys(op.inputs)]
        outs = [(concrete(graph.values[v].type.shape, bindings), graph.values[v].type.dtype) for v in op.outputs]
        if op.type == "gather":  # reads the rows it gathers, not the whole table
            ins = [ins[-1], outs[0]] if len(ins) > 1 else ins
        attrs = get(op.type).resolve_attrs(op.attrs)
        in_shapes = [concrete(graph.values[v].type.shape, bindings) for v in op.inputs]
        costs.append((op_flops(op.type, attrs, in_shapes, [s for s, _ in outs]), op_bytes(ins, outs)))
    return costs


__all__ = ["op_flops", "op_bytes", "concrete", "bind_free_dims", "graph_op_costs"]
