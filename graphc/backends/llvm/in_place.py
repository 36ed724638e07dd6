"""Which state updates of a training step its kernels write over their weights, and the op order that allows it.

A training step's state updates (new weights, optimizer slots, moving statistics, the iteration counter) are
outputs of its graph that the runtime copied over the weights after the step: three passes over every
weight's bytes (its update kernel's write, the copy's read and write) where one write would do. An embedding
table of 10,000 x 64 floats and its RMSprop slot cost about 0.5 ms of copying per step on a 15 GB/s machine.
Written in place (XLA's input/output aliasing of donated buffers does the same), an update must not clobber
a value some other kernel still reads, and a step that fails must leave the weights as they were. So an
update is written in place when:

- its producer reads each element where it writes it: an elementwise op (``fused_elementwise`` and the
  elementwise and broadcasting families) whose output has the weight's shape, reading the weights it
  overwrites at that shape;
- no op outside the in-place writers reads its result (so all of them can run last: a failure earlier
  leaves every weight untouched), and no graph output is the weight itself (outputs are copied after the
  kernels);
- every other reader of the old value runs before the writer: readers outside the writers are earlier
  anyway; among the writers, an order is chosen in which each weight's readers come before its writer
  (a writer whose constraints form a cycle falls back to the copy);
- it comes after the step's last random draw, whose stream is keyed by the op's position.

:func:`schedule_in_place` returns the graph with its ops in that order (the writers last) and the names
of the weights updated in place; the runtime points those updates' outputs at the weights
(``gc_update_def_t.in_place``) and skips their copy.
"""

from __future__ import annotations

from graphc.ir.graph import Graph, Op
from graphc.ops import get

_ELEMENTWISE_KINDS = ("elementwise", "broadcast")


def _writes(graph: Graph) -> dict[str, list[str]]:
    """Op id -> the weights its outputs update, for the ops eligible by their kind and shapes."""
    updates: dict[str, str] = graph.meta.get("state_updates") or {}
    by_value: dict[str, list[str]] = {}
    for weight, value in updates.items():
        by_value.setdefault(value, []).append(weight)
    outputs = set(graph.outputs)
    writes: dict[str, list[str]] = {}
    for value, weights in by_value.items():
        info = graph.values.get(value)
        if info is None or info.kind != "op" or len(weights) != 1:
            continue
        (weight,) = weights
        if weight not in graph.constants or weight in outputs:
            continue
        op = graph.op(info.producer)
        if op.type != "fused_elementwise" and get(op.type).fusion_kind not in _ELEMENTWISE_KINDS:
            continue
        if tuple(graph.type_of(value).shape) != tuple(graph.type_of(weight).shape):
            continue
        writes.setdefault(op.id, []).append(weight)
    for op_id, weights in list(writes.items()):
        op = graph.op(op_id)
        shape = tuple(graph.type_of(op.outputs[0]).shape)
        if any(tuple(graph.type_of(o).shape) != shape for o in op.outputs) or \
                any(w in op.inputs and tuple(graph.type_of(w).shape) != shape for w in weights):
            del writes[op_id]
    return writes


def _writer_order(graph: Graph, writers: dict[str, list[str]]) -> list[Op] | None:
    """The writers in an order where data flows forward and each weight's other readers among them come first;
    None when there is none."""
    ids = list(writers)
    after: dict[str, set[str]] = {i: set() for i in ids}  # op -> writers that must run before it
    produced = {o: i for i in ids for o in graph.op(i).outputs}
    for i in ids:
        op = graph.op(i)
        after[i] |= {produced[v] for v in op.inputs if v in produced and produced[v] != i}
        for weight in writers[i]:
            for reader in ids:
                if reader != i and weight in graph.op(reader).inputs:
                    after[i].add(reader)
    order, done = [], set()
    while len(order) < len(ids):
        ready = [i for i in ids if i not in done and after[i] <= done]
        if not ready:
            return None
        for i in ready:
            order.append(graph.op(i))
            done.add(i)
    return order


def native_schedule(graph: Graph) -> tuple[Graph, set[str]]:
    """The graph in the order its native code runs the ops (the runtime numbers ops, in errors and in the
    profiler, by this order), and the weights updated in place: a training step with state updates is
    :func:`schedule_in_place`'s, any other graph runs as it is."""
    if graph.meta.get("train_step") and graph.meta.get("state_updates"):
        return schedule_in_place(graph)
    return graph, set()


def schedule_in_place(graph: Graph) -> tuple[Graph, set[str]]:
    """(``graph`` with its in-place writers last, the weights they update in place); the graph unchanged and an
    empty set when nothing qualifies. Random draws keep their positions (their streams are keyed by the op's
    index): only writers placed after the last draw move."""
    ops = graph.ops()
    last_draw = max((i for i, op in enumerate(ops) if op.type.startswith("random_")), default=-1)
    position = {op.id: i for i, op in enumerate(ops)}
    writers = {i: w for i, w in _writes(graph).items() if position[i] > last_draw}
    while writers:
        outputs = {o: i for i in writers for o in graph.op(i).outputs}
        # a writer whose result another op reads cannot run last
        blocked = {outputs[v] for op in graph.ops() if op.id not in writers for v in op.inputs if v in outputs}
        if blocked:
            for i in blocked:
                del writers[i]
            continue
        order = _writer_order(graph, writers)
        if order is None:  # a cycle of readers and writers: the writer of the most-read weight copies instead
            del writers[max(writers, key=lambda i: sum(w in op.inputs for op in graph.ops() for w in writers[i]))]
            continue
        rest = [op for op in graph.ops() if op.id not in writers]
        scheduled = graph.copy(rest + order)
        scheduled.name = graph.name
        return scheduled, {w for weights in writers.values() for w in weights}
    return graph, set()
