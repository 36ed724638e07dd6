"""Dead-code elimination: ops whose results no graph output depends on, and unused constants."""

from __future__ import annotations

from graphc.ir.graph import Graph
from graphc.passes.manager import note, register_pass


@register_pass("dce")
def dce(graph: Graph) -> bool:
    """Remove ops no graph output depends on, then constants nothing reads."""
    live: set[str] = set(graph.outputs)
    dead = []
    for op in reversed(graph.ops()):
        if any(o in live for o in op.outputs):
            live.update(op.inputs)
        else:
            dead.append(op.id)
    for op_id in dead:
        graph.remove_op(op_id)
    unused = [name for name in graph.constants if name not in live]
    for name in unused:
        graph.remove_constant(name)
    if dead:
        note("ops removed", len(dead))
    if unused:
        note("constants removed", len(unused))
    return bool(dead or unused)
