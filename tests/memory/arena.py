"""A test oracle for memory plans: run a graph with every tensor stored where the plan says.

Intermediates live in one byte array of ``arena_bytes`` (initialised to 0xFF, a NaN pattern
for floats, so reading unwritten memory shows), outputs in one buffer per output, views
read their base's bytes through the planned offset and strides. If two tensors alive at
once shared bytes, or a view's layout were wrong, the results would differ from the
reference interpreter's.
"""

from __future__ import annotations

import numpy as np

from graphc.backends.reference.interpreter import bind_inputs
from graphc.ir.graph import Graph
from graphc.memory import MemoryPlan
from graphc.ops.registry import get


def run_in_arena(graph: Graph, plan: MemoryPlan, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays, bindings = bind_inputs(graph, feeds)
    assert bindings == {k: v for k, v in plan.bindings.items() if k in bindings}, (bindings, plan.bindings)
    arena = np.full(plan.arena_bytes, 0xFF, dtype=np.uint8)
    regions: dict[tuple[str, str], np.ndarray] = {}
    for name, a in arrays.items():
        regions[("input", name)] = np.ascontiguousarray(a).reshape(-1).view(np.uint8).copy()
    for name, c in graph.constants.items():
        regions[("constant", name)] = np.ascontiguousarray(c).reshape(-1).view(np.uint8)
    for t in plan.tensors.values():
        if t.region == "output" and t.buffer == t.name:
            regions[("output", t.name)] = np.full(max(t.nbytes, 1), 0xFF, dtype=np.uint8)

    def view(v: str) -> np.ndarray:
        if v in graph.constants:
            return graph.constants[v]
        t = plan.tensors[v]
        buf = arena if t.region == "arena" else regions[(t.region, t.buffer)]
        item = graph.values[v].type.itemsize
        return np.ndarray(t.shape, dtype=graph.values[v].type.dtype, buffer=buf, offset=t.offset,
                          strides=tuple(s * item for s in t.strides))

    for op_id in plan.schedule:
        op = graph.op(op_id)
        opdef = get(op.type)
        attrs = opdef.resolve_attrs(op.attrs)
        if opdef.uses_dims:
            attrs["bindings"] = bindings
        result = opdef.reference(*[view(v) for v in op.inputs], **attrs)
        results = result if isinstance(result, tuple) else (result,)
        for out, r in zip(op.outputs, results):
            dst = view(out)
            if plan.tensors[out].how == "view":
                assert np.array_equal(dst, r, equal_nan=True), f"view {out!r} does not show its base's data"
            else:
                dst[...] = r
    return {o: view(o).copy() for o in graph.outputs}
