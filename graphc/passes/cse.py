"""Common-subexpression elimination: one op per (type, inputs, attributes), one copy of small constants.

Two ops of the same type reading the same values with the same attributes compute the same
thing (every graphc op is pure); the later one is replaced by the earlier one. Small
non-trainable constants with identical dtype, shape and bytes are merged first, so that
ops reading equal copies also meet. The model's own weights are left alone even when equal
(two zero-initialized biases are two parameters), and constants above
``MAX_CONSTANT_ELEMENTS`` are not hashed (it would cost a pass over every weight each time).
"""

from __future__ import annotations

from typing import Any

from graphc.ir.graph import Graph
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import replace_value, replaceable

MAX_CONSTANT_ELEMENTS = 4096


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def _merge_constants(graph: Graph) -> int:
    seen: dict[tuple, str] = {}
    merged = 0
    for name in list(graph.constants):
        array = graph.constants[name]
        if array.size > MAX_CONSTANT_ELEMENTS or graph.values[name].trainable:
            continue
        key = (array.dtype.str, array.shape, array.tobytes())
        first = seen.setdefault(key, name)
        if first != name and graph.num_uses(name) and replaceable(graph, name, first):
            graph.replace_all_uses(name, first)
            merged += 1
    return merged


@register_pass("cse")
def cse(graph: Graph) -> bool:
    """Merge duplicate small constants and ops computing the same value."""
    merged_constants = _merge_constants(graph)
    seen: dict[tuple, str] = {}
    merged = 0
    for op in graph.ops():
        if not graph.has_op(op.id):
            continue
        working_on(op)
        key = (op.type, tuple(op.inputs), _hashable(op.attrs),
               tuple(graph.values[o].type for o in op.outputs))
        first = seen.setdefault(key, op.id)
        if first == op.id:
            continue
        keep = graph.op(first)
        if not all(replaceable(graph, o, k) for o, k in zip(op.outputs, keep.outputs)):
            continue
        for out, kept in zip(list(op.outputs), keep.outputs):
            replace_value(graph, out, kept)
        merged += 1
    working_on(None)
    if merged_constants:
        note("constants merged", merged_constants)
    if merged:
        note("ops merged", merged)
    return bool(merged or merged_constants)
