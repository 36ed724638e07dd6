"""Liveness: which values share storage, the execution order, and when each buffer is alive.

Everything here is independent of the sizes of free dimensions, so it is computed once per
graph; only sizes and offsets depend on the bindings (see ``planner.py``).

Sharing storage (an *alias* of a base value):

- **views**: ``reshape``/``squeeze``/``expand_dims``/``identity``/``dropout`` of a contiguous
  value, and any ``slice`` (a strided view: same storage, a start offset and strides), read
  their input's storage and copy nothing;
- **concatenation in place**: each input of a ``concat`` that nothing else claims is written
  by its producer straight into its slice of the concatenated result, so the concat itself
  copies nothing (decided outermost concat first, so nested concats nest);
- **in place**: an elementwise op (``fusion_kind`` elementwise/broadcast: activations,
  arithmetic, ``bias_add``, ``scale_shift``), or a fused op on its residual input, writes its
  result over an input of the same type whose storage dies at that op.

A graph output is never an alias (it must land in the caller's buffer); values aliasing a
graph input, a constant or a graph output live in that region, not in the arena.

Schedules: the lowest peak among the graph's own topological order, a memory-aware list
schedule (at each step the ready op that frees the most and allocates the least, as XLA's
``ListScheduler``), a depth-first order (finish one branch before starting the next) and a
depth-first order that visits the operand with the heaviest ancestry first (XLA's
``DFSMemoryScheduler``) or the lightest first (a short side branch, such as a residual
shortcut, runs before the long one, so that the tensor both read dies early).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from graphc.ir.graph import Graph, Op
from graphc.ops.fused import EPILOGUE_ATTRS, FUSED_OPS, epilogue_inputs
from graphc.ops.registry import get

CONTIGUOUS_VIEWS = ("reshape", "squeeze", "expand_dims", "identity", "dropout")
SCHEDULES = ("default", "greedy", "dfs", "dfs_heavy", "dfs_light")


@dataclass(frozen=True)
class Alias:
    """``value`` uses the storage of ``base``: as a view, in place, or as a concat part."""

    base: str
    how: str  # "view" | "in-place" | "concat"
    op: str  # the op that makes the alias
    axis: int = 0  # slice / concat axis
    start: int | None = 0  # slice
    stop: int | None = None  # slice
    step: int = 1  # slice
    part: int = 0  # index of the part among the concat's inputs
    strided: bool = False  # a slice (the others keep the base's layout or reshape it contiguously)


@dataclass
class Liveness:
    """Storage sharing and lifetimes over one schedule (indices into ``order``)."""

    order: list[Op]
    aliases: dict[str, Alias]
    root: dict[str, str]  # value -> the value owning its storage
    region: dict[str, str]  # root -> arena | input | output | constant
    first: dict[str, int]  # root -> first schedule index it is written
    last: dict[str, int]  # root -> last schedule index it is read
    value_first: dict[str, int]
    value_last: dict[str, int]
    members: dict[str, list[str]] = field(default_factory=dict)

    def arena_roots(self) -> list[str]:
        return [r for r, reg in self.region.items() if reg == "arena"]


# ---------------------------------------------------------------------------- static aliases
def _is_strided_slice_contiguous(graph: Graph, op: Op) -> bool:
    shape = graph.type_of(op.inputs[0]).shape
    axis = op.attrs["axis"] % len(shape)
    return op.attrs.get("step", 1) == 1 and all(d == 1 for d in shape[:axis])


def static_aliases(graph: Graph, *, concat_in_place: bool = True, strided_views: bool = True) -> dict[str, Alias]:
    """Views and concat parts (order-independent aliasing).

    Concat parts are chosen first (outermost concat first), since a part written into the
    middle of a row is no longer contiguous, and a reshape is a view only of a contiguous value.
    """
    aliases: dict[str, Alias] = {}
    contiguous: dict[str, bool] = {}
    outputs = set(graph.outputs)
    if concat_in_place:
        for op in reversed(graph.ops()):
            if op.type != "concat" or len(op.inputs) < 2:
                continue
            out = op.outputs[0]
            shape = graph.type_of(out).shape
            axis = op.attrs.get("axis", -1) % len(shape)
            flat = all(d == 1 for d in shape[:axis])
            if not (flat or strided_views):
                continue
            for i, x in enumerate(op.inputs):
                value = graph.values[x]
                if value.kind != "op" or x in outputs or x in aliases or op.inputs.count(x) != 1:
                    continue
                producer = graph.op(value.producer)
                if len(producer.outputs) != 1 or producer.type in CONTIGUOUS_VIEWS or producer.type == "slice":
                    continue  # a view keeps its base's storage; it cannot also live in the concat
                aliases[x] = Alias(out, "concat", op.id, axis=axis, part=i, strided=not flat)
                contiguous[x] = flat and contiguous.get(out, True)
    for op in graph.ops():
        if len(op.outputs) != 1:
            continue
        out = op.outputs[0]
        if out in outputs or out in aliases or not op.inputs:
            continue
        x = op.inputs[0]
        if op.type in CONTIGUOUS_VIEWS and contiguous.get(x, True):
            aliases[out] = Alias(x, "view", op.id)
            contiguous[out] = True
        elif op.type == "slice":
            flat = _is_strided_slice_contiguous(graph, op)
            if flat or strided_views:
                a = op.attrs
                aliases[out] = Alias(x, "view", op.id, axis=a["axis"] % graph.type_of(x).rank,
                                     start=a.get("start", 0), stop=a.get("stop"), step=a.get("step", 1),
                                     strided=True)
                contiguous[out] = flat and contiguous.get(x, True)
            else:
                contiguous[out] = True
    return aliases


def inplace_candidates(graph: Graph, op: Op) -> list[int]:
    """Input positions ``op`` may overwrite with its result (same type, read at the same index)."""
    if len(op.outputs) != 1:
        return []
    out_type = graph.type_of(op.outputs[0])
    if op.type in FUSED_OPS:
        _, residual = epilogue_inputs(FUSED_OPS[op.type], {**EPILOGUE_ATTRS, **op.attrs}, len(op.inputs), op.type)
        idx = [] if residual is None else [residual]
    elif get(op.type).fusion_kind in ("elementwise", "broadcast") and op.type not in CONTIGUOUS_VIEWS:
        idx = list(range(len(op.inputs)))
    else:
        return []
    return [i for i in idx if graph.type_of(op.inputs[i]) == out_type]


# ---------------------------------------------------------------------------- liveness
def last_uses(graph: Graph, order: list[Op]) -> dict[str, int]:
    """The position in ``order`` of the last op that reads each graph input and op result (its producer's
    where none reads it, -1 for an unread input); a graph output is read after every op (``len(order)``).
    Constants are not listed. The memory plan's lifetimes and the native code's in-place results
    (:mod:`graphc.backends.llvm.result_in_place`) both come from it."""
    last: dict[str, int] = {name: -1 for name in graph.inputs}
    for i, op in enumerate(order):
        for v in op.inputs:
            if v in last:
                last[v] = i
        for o in op.outputs:
            last[o] = i
    for o in graph.outputs:
        if o in last:
            last[o] = len(order)
    return last


def analyze(graph: Graph, order: list[Op], static: Mapping[str, Alias], *, inplace: bool = True) -> Liveness:
    """Storage roots, regions and lifetimes over ``order`` (in-place decisions depend on it)."""
    index = {op.id: i for i, op in enumerate(order)}
    value_first: dict[str, int] = {name: -1 for name in graph.inputs}
    for i, op in enumerate(order):
        for o in op.outputs:
            value_first[o] = i
    value_last = last_uses(graph, order)

    aliases = dict(static)

    def root_of(v: str) -> str:
        while v in aliases:
            v = aliases[v].base
        return v

    group_first: dict[str, int] = {}
    group_last: dict[str, int] = {}
    for v in value_first:
        r = root_of(v)
        group_first[r] = min(group_first.get(r, value_first[v]), value_first[v])
        group_last[r] = max(group_last.get(r, value_last[v]), value_last[v])

    outputs = set(graph.outputs)

    def region_of(r: str) -> str:
        kind = graph.values[r].kind
        if kind == "input":
            return "input"
        if kind == "constant":
            return "constant"
        return "output" if r in outputs else "arena"

    if inplace:
        for op in order:
            i = index[op.id]
            if len(op.outputs) != 1:
                continue
            v = op.outputs[0]
            if v in aliases or v in outputs:
                continue
            for pos in inplace_candidates(graph, op):
                u = op.inputs[pos]
                if any(a.how != "in-place" for a in _chain(aliases, u)):
                    continue  # u must cover its whole buffer with the same layout
                r = root_of(u)
                if region_of(r) != "arena" or group_last[r] != i:
                    continue
                aliases[v] = Alias(u, "in-place", op.id)
                group_last[r] = max(group_last[r], group_last.pop(v))
                group_first.pop(v)
                break

    root = {v: root_of(v) for v in value_first}
    for c in graph.constants:
        root[c] = root_of(c)
    regions = {r: region_of(r) for r in set(root.values())}
    members: dict[str, list[str]] = {}
    for v, r in root.items():
        members.setdefault(r, []).append(v)
    first = {r: group_first.get(r, -1) for r in regions}
    last = {r: group_last.get(r, -1) for r in regions}
    return Liveness(order, aliases, root, regions, first, last, value_first, value_last, members)


def _chain(aliases: Mapping[str, Alias], v: str) -> list[Alias]:
    out = []
    while v in aliases:
        out.append(aliases[v])
        v = aliases[v].base
    return out


def peak_bytes(live: Liveness, size: Callable[[str], int]) -> int:
    """The most bytes of arena buffers alive at one schedule step (buffers sized by ``size``)."""
    n = len(live.order)
    delta = [0] * (n + 2)
    for r in live.arena_roots():
        s = size(r)
        delta[max(live.first[r], 0)] += s
        delta[max(live.last[r], live.first[r], 0) + 1] -= s
    peak = cur = 0
    for d in delta:
        cur += d
        peak = max(peak, cur)
    return peak


# ---------------------------------------------------------------------------- schedules
def _dfs_order(graph: Graph, weight: Callable[[str], int] | None = None, lightest_first: bool = False) -> list[Op]:
    """Depth-first post-order from the outputs; with ``weight``, heaviest (or lightest) operand subtree first."""
    heavy: dict[str, int] = {}
    if weight is not None:  # XLA's DFSMemoryScheduler: cumulative bytes of each op's ancestors
        for op in graph.ops():
            heavy[op.id] = sum(weight(o) for o in op.outputs) + sum(
                heavy[p] for p in {graph.values[v].producer for v in op.inputs} if p is not None)
    seen: set[str] = set()
    order: list[Op] = []
    rank = {op.id: i for i, op in enumerate(graph.ops())}
    for out in graph.outputs:
        p = graph.values[out].producer
        if p is None or p in seen:
            continue
        stack: list[tuple[str, bool]] = [(p, False)]
        while stack:
            op_id, done = stack.pop()
            if done:
                order.append(graph.op(op_id))
                continue
            if op_id in seen:
                continue
            seen.add(op_id)
            stack.append((op_id, True))
            op = graph.op(op_id)
            preds = [q for q in dict.fromkeys(graph.values[v].producer for v in op.inputs)
                     if q is not None and q not in seen]
            if weight is not None:
                preds.sort(key=lambda q: heavy[q] if lightest_first else -heavy[q])
            for q in reversed(preds):
                stack.append((q, False))
    order.extend(op for op in graph.ops() if op.id not in seen)  # ops no output depends on
    assert len(order) == len(rank)
    return order


def _greedy_order(graph: Graph, static: Mapping[str, Alias], size: Callable[[str], int]) -> list[Op]:
    ops = graph.ops()
    rank = {op.id: i for i, op in enumerate(ops)}

    def root_of(v: str) -> str:
        while v in static:
            v = static[v].base
        return v

    arena = {v for v, val in graph.values.items()
             if val.kind == "op" and root_of(v) not in graph.outputs and graph.values[root_of(v)].kind == "op"}
    readers: dict[str, int] = {}
    for op in ops:
        for r in {root_of(v) for v in op.inputs}:
            readers[r] = readers.get(r, 0) + 1
    waiting = {op.id: len({graph.values[v].producer for v in op.inputs if graph.values[v].producer}) for op in ops}
    consumers: dict[str, set[str]] = {}
    for op in ops:
        for v in op.inputs:
            p = graph.values[v].producer
            if p is not None:
                consumers.setdefault(p, set()).add(op.id)
    allocated: set[str] = set()
    ready = [op.id for op in ops if waiting[op.id] == 0]
    order: list[Op] = []
    while ready:
        best, best_score = None, None
        for op_id in ready:
            op = graph.op(op_id)
            alloc = sum(size(root_of(o)) for o in op.outputs
                        if o in arena and root_of(o) not in allocated)
            freed = sum(size(r) for r in {root_of(v) for v in op.inputs}
                        if r in arena and readers.get(r, 0) == 1 and r not in graph.outputs)
            score = (alloc - freed, rank[op_id])
            if best_score is None or score < best_score:
                best, best_score = op_id, score
        assert best is not None
        ready.remove(best)
        op = graph.op(best)
        order.append(op)
        for o in op.outputs:
            allocated.add(root_of(o))
        for r in {root_of(v) for v in op.inputs}:
            readers[r] = readers.get(r, 0) - 1
        for c in consumers.get(best, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    return order


def candidate_orders(graph: Graph, static: Mapping[str, Alias], size: Callable[[str], int],
                     which: tuple[str, ...] = SCHEDULES) -> dict[str, list[Op]]:
    """The candidate schedules by name."""
    out: dict[str, list[Op]] = {}
    for name in which:
        if name == "default":
            out[name] = graph.ops()
        elif name == "greedy":
            out[name] = _greedy_order(graph, static, size)
        elif name == "dfs":
            out[name] = _dfs_order(graph)
        elif name == "dfs_heavy":
            out[name] = _dfs_order(graph, size)
        elif name == "dfs_light":
            out[name] = _dfs_order(graph, size, lightest_first=True)
        else:
            raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")
    return out
