"""The optimizer passes on step graphs (forward, losses, backward, optimizer update) before native code.

A step graph's state constants (weights, optimizer slots, ``iterations``, BatchNorm moving
statistics) are not constants at all: every step overwrites them. The passes that read constant
values (folding, CSE's merging of equal small constants: Adam's zero-initialized ``m`` and ``v``
of one bias are equal bytes) must not see them, and the library must keep each of them under its
name (the runtime writes the updates over them, the host reads and sets them by name). So while the
pipeline runs they are graph *inputs*; afterwards they are constants again, in their first order.

Every graph output keeps its name through the passes (``pattern.replace_value``), so
``graph.meta["state_updates"]`` and the reported outputs still name the right values.

Ops with random state (dropout masks, Gaussian noise) draw anew at each call: two of them reading the
same value with the same attributes are two draws, so the step's CSE (``cse_keep_draws``) leaves them
apart, and a constant such an op reads is kept as a state constant is (never folded into one draw).
Native code keys each draw by the op's position in the graph (``kernels/random.py``), so the
optimized graph is scheduled with every random op at the position it had before (one of the
topological orders puts it there whenever enough ops are independent of it); where none does, the
optimizer's order is kept and the masks are another, equally seeded, draw.

The pipeline: simplification (no-op removal, CSE, constant folding, DCE to a fixed point), epilogue
fusion (a product absorbs a bias, activation or residual add whose value nothing else reads; in a
step graph the backward pass reads most forward activations, which keeps them), then elementwise
fusion (each weight's whole optimizer update becomes one kernel) and a last DCE.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

from graphc.ir.graph import Graph, Op
from graphc.passes import FixedPoint, PassManager, PassReport, Pipeline, register_pass
from graphc.passes.cse import cse

__all__ = ["optimize_step_graph", "step_pipeline", "state_constants", "RANDOM_OPS"]

RANDOM_OPS = frozenset({"random_uniform_like", "random_normal_like"})


@register_pass("cse_keep_draws")
def cse_keep_draws(graph: Graph) -> bool:
    """CSE that keeps every op with random state apart (each is its own draw)."""
    draws = [op for op in graph.ops() if op.type in RANDOM_OPS]
    for op in draws:
        op.attrs["draw"] = op.id  # a key no other op shares, for the duration of the pass
    try:
        return cse(graph)
    finally:
        for op in draws:
            op.attrs.pop("draw", None)


def step_pipeline(fold_constants: bool = True) -> Pipeline:
    """The passes a step graph goes through. Without ``fold_constants`` no constant is created (the
    split step's halves: their constants must all be the training graph's)."""
    simplify = ["remove_noops", "cse_keep_draws"] + (["constant_fold"] if fold_constants else []) + ["dce"]
    return Pipeline("step", [FixedPoint(Pipeline("simplify", simplify)), "fuse_epilogue", "fuse_elementwise", "dce"])


def state_constants(graph: Graph, extra: Iterable[str] = ()) -> list[str]:
    """The constants of ``graph`` that a step updates or the host sets by name: every trainable one,
    every key of ``graph.meta["state_updates"]`` and ``extra`` (a model's variables); and those an op
    with random state reads."""
    keep = set(graph.meta.get("state_updates", {})) | set(extra)
    keep |= {v for op in graph.ops() if op.type in RANDOM_OPS for v in op.inputs}
    return [c for c in graph.constants if c in keep or graph.values[c].trainable]


@contextmanager
def _constants_as_inputs(graph: Graph, names: list[str]):
    """Turn constants ``names`` into graph inputs for the duration, then back (data, flags, order)."""
    order = list(graph.constants)
    arrays = {n: graph.constants.pop(n) for n in names}
    first_inputs = list(graph.inputs)
    for n in names:
        graph.values[n].kind = "input"
    graph.inputs = first_inputs + names
    try:
        yield
    finally:
        graph.inputs = first_inputs
        for n in names:
            graph.values[n].kind = "constant"
        rest = dict(graph.constants)
        graph.constants.clear()
        for n in order:
            if n in arrays:
                graph.constants[n] = arrays[n]
            elif n in rest:
                graph.constants[n] = rest.pop(n)
        graph.constants.update(rest)  # constants the passes made


def _schedule(graph: Graph, targets: dict[str, int]) -> list[Op] | None:
    """A topological order of ``graph``'s ops with op ``id`` at position ``targets[id]``, or None.

    Greedy: at each position the op due there if it is ready; else the first ready op of the current
    order, ancestors of the next op due first."""
    ops = graph.ops()
    position = {op.id: i for i, op in enumerate(ops)}
    if any(t not in position or not 0 <= i < len(ops) for t, i in targets.items()):
        return None
    readers: dict[str, list[str]] = {op.id: [] for op in ops}
    waiting = {}
    for op in ops:
        producers = {graph.values[v].producer for v in op.inputs} - {None}
        waiting[op.id] = len(producers)
        for p in producers:
            readers[p].append(op.id)
    due = sorted(targets, key=targets.get)
    ready = sorted((op.id for op in ops if waiting[op.id] == 0), key=position.get)
    order: list[Op] = []
    while len(order) < len(ops):
        p = len(order)
        nxt = due[0] if due else None
        if nxt is not None and targets[nxt] == p:
            if nxt not in ready:
                return None
            pick = nxt
            due.pop(0)
        else:
            candidates = [r for r in ready if r not in targets]
            if not candidates:
                return None
            pick = candidates[0]
            if nxt is not None:
                needed = _ancestors(graph, graph.op(nxt))
                pick = next((r for r in candidates if r in needed), pick)
        ready.remove(pick)
        order.append(graph.op(pick))
        for r in readers[pick]:
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
        ready.sort(key=position.get)
    return order


def _ancestors(graph: Graph, op: Op) -> set[str]:
    seen: set[str] = set()
    work = [op]
    while work:
        for v in work.pop().inputs:
            p = graph.values[v].producer
            if p is not None and p not in seen:
                seen.add(p)
                work.append(graph.op(p))
    return seen


def _keep_draw_positions(before: Graph, after: Graph) -> Graph:
    targets = {op.id: i for i, op in enumerate(before.ops()) if op.type in RANDOM_OPS}
    if not targets or all(after.has_op(t) and after.ops().index(after.op(t)) == i for t, i in targets.items()):
        return after
    order = _schedule(after, targets)
    return after if order is None else after.copy(order)


def optimize_step_graph(graph: Graph, *, keep: Iterable[str] = (), fold_constants: bool = True,
                        verify: bool | None = None) -> tuple[Graph, PassReport]:
    """An optimized copy of step graph ``graph`` and the pass report. ``keep``: constants that must stay
    constants of that name, untouched (besides :func:`state_constants`), such as every model variable
    the host sets by name; ``verify``: the pass manager's (``GRAPHC_VERIFY_PASSES`` when None)."""
    out = graph.copy()
    protected = state_constants(out, keep)
    with _constants_as_inputs(out, protected):
        report = PassManager(verify=verify).run(out, step_pipeline(fold_constants))
    return _keep_draw_positions(graph, out), report
