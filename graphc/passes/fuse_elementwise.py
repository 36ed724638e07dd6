"""Elementwise-chain fusion: each maximal connected group of elementwise ops of one shape becomes one op.

A group is grown over producer -> consumer edges between ops of
:data:`graphc.ops.fused_elementwise.FUSIBLE_OPS` whose results have the same shape (the group's
iteration shape; the values it reads from outside may broadcast to it). It becomes one
``fused_elementwise`` op whose program lists the group's ops in order; every value of the group
that something outside it reads (another op, a graph output) is an output of the fused op, so the
optimizer update of one weight (Adam's ``m``, ``v`` and the weight) is one kernel with three outputs.

Groups never create a cycle: two ops join only if no value the merged group reads from outside
depends on one of its members (ancestor sets of the graph as it was before the pass, as bitsets).
Ops with random state (dropout masks, noise) are not fusible, so they keep their own kernel and call
counter. A lone op is left as it is.
"""

from __future__ import annotations

from graphc.ir.graph import Graph, Op
from graphc.ops.fused_elementwise import FUSIBLE_OPS
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import replace_value


def _fusible(graph: Graph, op: Op) -> bool:
    return op.type in FUSIBLE_OPS and len(op.outputs) == 1


class _Groups:
    """Union-find over op indices, with each root's member bitset."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.members = [1 << i for i in range(n)]

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, roots: list[int]) -> int:
        keep = roots[0]
        for r in roots[1:]:
            self.parent[r] = keep
            self.members[keep] |= self.members[r]
        return keep


def _groups(graph: Graph, ops: list[Op]) -> list[list[Op]]:
    index = {op.id: i for i, op in enumerate(ops)}
    ancestors = [0] * len(ops)  # bitset of the ops each op depends on
    for i, op in enumerate(ops):
        mask = 0
        for v in op.inputs:
            p = graph.values[v].producer
            if p is not None:
                j = index[p]
                mask |= ancestors[j] | (1 << j)
        ancestors[i] = mask
    fusible = [_fusible(graph, op) for op in ops]
    shape = [graph.type_of(op.outputs[0]).shape if fusible[i] else None for i, op in enumerate(ops)]
    groups = _Groups(len(ops))

    def reads_back(members: int) -> bool:
        """Whether a value the group reads from outside depends on one of its members."""
        m = members
        while m:
            low = m & -m
            i = low.bit_length() - 1
            m ^= low
            for v in ops[i].inputs:
                p = graph.values[v].producer
                if p is None:
                    continue
                j = index[p]
                if not (members >> j) & 1 and ancestors[j] & members:
                    return True
        return False

    for i, op in enumerate(ops):
        if not fusible[i]:
            continue
        working_on(op)
        for v in dict.fromkeys(op.inputs):
            p = graph.values[v].producer
            if p is None:
                continue
            j = index[p]
            if not fusible[j] or shape[j] != shape[i]:
                continue
            a, b = groups.find(i), groups.find(j)
            if a == b:
                continue
            if not reads_back(groups.members[a] | groups.members[b]):
                groups.union([b, a])
    working_on(None)
    by_root: dict[int, list[Op]] = {}
    for i, op in enumerate(ops):
        if fusible[i]:
            by_root.setdefault(groups.find(i), []).append(op)
    return [g for g in by_root.values() if len(g) > 1]


def _fuse(graph: Graph, group: list[Op]) -> None:
    members = {op.id for op in group}
    produced = {op.outputs[0]: n for n, op in enumerate(group)}
    inputs: list[str] = []
    for op in group:
        for v in op.inputs:
            if v not in produced and v not in inputs:
                inputs.append(v)
    n = len(inputs)

    def ref(v: str) -> int:
        return n + produced[v] if v in produced else inputs.index(v)

    program = tuple((op.type, tuple(ref(v) for v in op.inputs), tuple(sorted(op.attrs.items()))) for op in group)
    outside = set(graph.outputs)
    escaping = [op.outputs[0] for op in group
                if op.outputs[0] in outside or any(c.id not in members for c, _ in graph.consumers(op.outputs[0]))]
    layer = group[-1].layer
    fused = graph.add_op("fused_elementwise", inputs, [graph.type_of(v) for v in escaping],
                         {"program": program, "outputs": tuple(ref(v) for v in escaping)}, layer=layer,
                         name=f"{group[-1].id}/fused")
    for old, new in zip(escaping, fused.outputs):
        replace_value(graph, old, new)
    note(f"{len(group)} ops -> 1 ({len(escaping)} outputs)")


@register_pass("fuse_elementwise")
def fuse_elementwise(graph: Graph) -> bool:
    """Fuse connected elementwise ops of one iteration shape into fused_elementwise ops."""
    groups = _groups(graph, graph.ops())
    for group in groups:
        working_on(group[-1])
        _fuse(graph, group)
    working_on(None)
    if groups:
        note("groups fused", len(groups))
    return bool(groups)
