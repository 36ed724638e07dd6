"""Removal of ops that compute nothing: inference dropout, identities, and neutral data movement.

Removed outright (their output is their input): ``dropout`` (the inference graph's),
``identity``, a ``cast`` to the same dtype, a ``reshape`` to the same shape, an identity
``transpose``, a ``slice`` that covers its whole axis, a one-input ``concat``/``add_n``, and
arithmetic with a neutral constant (``x * 1``, ``x / 1``, ``x + 0``, ``x - 0``) that does not
broadcast ``x`` to a larger shape. Composed: ``reshape(reshape(x))`` becomes one reshape,
``transpose(transpose(x))`` one transpose (or nothing), ``squeeze(expand_dims(x, a), a)``
becomes ``x``. A graph output keeps its name (see ``pattern.replace_value``).
"""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph, Op
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import emit, is_constant, replace_value, replaceable


def _const_all(graph: Graph, value: str, fill: float) -> bool:
    return is_constant(graph, value) and bool(np.all(graph.constants[value] == fill))


def _same_type(graph: Graph, a: str, b: str) -> bool:
    return graph.type_of(a) == graph.type_of(b)


def _identity_of(graph: Graph, op: Op) -> str | None:
    """The input ``op`` passes through unchanged, if it is a no-op."""
    out = op.outputs[0]
    t = op.type
    a = op.attrs
    if t in ("dropout", "identity"):
        return op.inputs[0]
    if t in ("cast", "reshape") and _same_type(graph, op.inputs[0], out):
        return op.inputs[0]
    if t == "transpose" and tuple(a["perm"]) == tuple(range(len(a["perm"]))):
        return op.inputs[0]
    if t == "slice" and _same_type(graph, op.inputs[0], out) and a.get("step", 1) == 1 \
            and a.get("start", 0) in (0, None):
        return op.inputs[0]
    if t in ("concat", "add_n") and len(op.inputs) == 1:
        return op.inputs[0]
    if t in ("mul", "add"):
        neutral = 1.0 if t == "mul" else 0.0
        x, y = op.inputs
        if _const_all(graph, y, neutral) and _same_type(graph, x, out):
            return x
        if _const_all(graph, x, neutral) and _same_type(graph, y, out):
            return y
    if t in ("div", "sub"):
        x, y = op.inputs
        if _const_all(graph, y, 1.0 if t == "div" else 0.0) and _same_type(graph, x, out):
            return x
    return None


def _composed(graph: Graph, op: Op) -> str | None:
    """A cheaper equivalent of ``op`` applied to its producer's input, if there is one."""
    inner = graph.producer(op.inputs[0]) if op.inputs else None
    if inner is None or len(inner.outputs) != 1:
        return None
    x = inner.inputs[0] if inner.inputs else None
    if op.type == "reshape" and inner.type == "reshape":
        return emit(graph, "reshape", x, layer=op.layer, shape=op.attrs["shape"])
    if op.type == "transpose" and inner.type == "transpose":
        p1, p2 = inner.attrs["perm"], op.attrs["perm"]
        perm = tuple(p1[i] for i in p2)
        if perm == tuple(range(len(perm))):
            return x
        return emit(graph, "transpose", x, layer=op.layer, perm=perm)
    if op.type == "squeeze" and inner.type == "expand_dims":
        rank = graph.type_of(op.inputs[0]).rank
        if op.attrs["axis"] % rank == inner.attrs["axis"] % rank:
            return x
    return None


@register_pass("remove_noops")
def remove_noops(graph: Graph) -> bool:
    """Drop inference dropout, identities and neutral reshapes/transposes/arithmetic."""
    changed = False
    for op in graph.ops():
        if not graph.has_op(op.id) or len(op.outputs) != 1:
            continue
        working_on(op)
        out = op.outputs[0]
        new = _identity_of(graph, op)
        event = f"{op.type} removed"
        if new is None:
            new = _composed(graph, op)
            event = f"{op.type} pair composed"
        if new is None:
            continue
        if not replaceable(graph, out, new):
            continue
        replace_value(graph, out, new)
        note(event)
        changed = True
    working_on(None)
    return changed
