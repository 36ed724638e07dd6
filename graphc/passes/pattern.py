"""Declarative patterns over the IR and the rewriting helpers every pass shares.

A pattern describes the producers of a value, the way TVM's ``is_op``/``is_const`` and
tinygrad's ``UPat`` do::

    Pat("relu", Pat("bias_add", Pat("matmul", Var("x"), Const("w")), Const("b")))

matches ``relu(bias_add(matmul(x, w), b))`` with ``w`` and ``b`` constants and binds the
names. Inner op patterns require by default that their value has exactly one use (the
pattern's own op) and is not a graph output, so that replacing the root leaves them dead.
:func:`rewrite` drives a list of ``(pattern, replacement)`` rules over the graph.

:func:`replace_value` keeps graph-output names stable: when the value replaced was a graph
output, the replacement takes over its name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.ir.graph import Graph, Op
from graphc.passes.manager import working_on

Where = Callable[[Graph, str], bool]


@dataclass
class Var:
    """Any value (``const=True``: a graph constant), bound to ``name``."""

    name: str
    const: bool = False
    where: Where | None = None


def Const(name: str, where: Where | None = None) -> Var:
    """A graph constant bound to ``name``."""
    return Var(name, const=True, where=where)


class Pat:
    """A value produced by an op of type ``op`` (or one of several) whose inputs match ``inputs``.

    ``name`` binds the op (``m.op(name)``) and its output value (``m[name]``).
    ``commutative`` also tries the two inputs of a binary op swapped. ``where`` is a
    predicate over the op. ``one_use`` (inner patterns only) asks for a single reader.
    """

    def __init__(self, op: str | tuple[str, ...], *inputs: Pat | Var, name: str | None = None,
                 where: Callable[[Graph, Op], bool] | None = None, commutative: bool = False,
                 one_use: bool = True):
        self.op = op
        self.inputs = inputs
        self.name = name
        self.where = where
        self.commutative = commutative
        self.one_use = one_use

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.inputs)
        return f"Pat({self.op!r}{', ' if inner else ''}{inner})"


@dataclass
class Match:
    """Bindings of a successful match: value names, and ops for named op patterns."""

    root: str
    values: dict[str, str] = field(default_factory=dict)
    ops: dict[str, Op] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def op(self, name: str) -> Op:
        return self.ops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values


def is_constant(graph: Graph, value: str) -> bool:
    return graph.values[value].kind == "constant"


def single_use(graph: Graph, value: str) -> bool:
    """Read by exactly one op input and not a graph output."""
    return value not in graph.outputs and len(graph.consumers(value)) == 1


def match(graph: Graph, pattern: Pat | Var, value: str) -> Match | None:
    """Bindings if ``value`` matches ``pattern`` (``None`` otherwise)."""
    m = Match(value)
    return m if _match(graph, pattern, value, m, root=True) else None


def _bind(m: Match, name: str, value: str) -> bool:
    if name in m.values:
        return m.values[name] == value
    m.values[name] = value
    return True


def _match(graph: Graph, pat: Pat | Var, value: str, m: Match, root: bool) -> bool:
    if isinstance(pat, Var):
        if pat.const and not is_constant(graph, value):
            return False
        if pat.where is not None and not pat.where(graph, value):
            return False
        return _bind(m, pat.name, value)
    op = graph.producer(value)
    if op is None:
        return False
    types = (pat.op,) if isinstance(pat.op, str) else pat.op
    if op.type not in types or len(op.outputs) != 1:
        return False
    if not root and pat.one_use and not single_use(graph, value):
        return False
    if pat.where is not None and not pat.where(graph, op):
        return False
    if pat.inputs:
        orders = [op.inputs]
        if pat.commutative and len(op.inputs) == 2:
            orders.append(op.inputs[::-1])
        for inputs in orders:
            if len(inputs) != len(pat.inputs):
                continue
            trial = Match(m.root, dict(m.values), dict(m.ops))
            if all(_match(graph, p, v, trial, False) for p, v in zip(pat.inputs, inputs)):
                m.values, m.ops = trial.values, trial.ops
                break
        else:
            return False
    if pat.name is not None:
        if not _bind(m, pat.name, value):
            return False
        m.ops[pat.name] = op
    return True


# ---------------------------------------------------------------------------- rewriting
Rule = tuple[Pat, Callable[[Graph, Match], "str | None"]]


def rewrite(graph: Graph, rules: Iterable[Rule]) -> bool:
    """Apply ``rules`` at every op, in topological order; returns whether anything changed.

    A rule's replacement function builds the new value (or returns ``None`` to decline);
    the matched root is then replaced by it and the ops left dead are removed.
    """
    rules = list(rules)
    changed = False
    for op in graph.ops():
        if not graph.has_op(op.id) or len(op.outputs) != 1:
            continue
        working_on(op)
        for pattern, build in rules:
            m = match(graph, pattern, op.outputs[0])
            if m is None:
                continue
            new = build(graph, m)
            if new is None:
                continue
            replace_value(graph, op.outputs[0], new)
            changed = True
            break
    working_on(None)
    return changed


def replaceable(graph: Graph, old: str, new: str) -> bool:
    """Whether ``old`` can be replaced by ``new`` without losing a graph output's name."""
    if old not in graph.outputs:
        return True
    return graph.values[new].kind == "op" and new not in graph.outputs


def replace_value(graph: Graph, old: str, new: str) -> None:
    """Make every reader of ``old`` read ``new``, remove what is left dead, keep output names."""
    if old == new:
        return
    was_output = old in graph.outputs
    producer = graph.values[old].producer
    graph.replace_all_uses(old, new)
    if producer is not None:
        remove_dead(graph, [producer])
    if (was_output and old not in graph.values and graph.values[new].kind == "op"
            and new not in graph.inputs and graph.outputs.count(new) == 1):
        graph.rename_value(new, old)


def remove_dead(graph: Graph, op_ids: Iterable[str]) -> int:
    """Remove the given ops if nothing reads them, then their producers likewise; returns the count."""
    work = list(op_ids)
    removed = 0
    while work:
        op_id = work.pop()
        if not graph.has_op(op_id):
            continue
        op = graph.op(op_id)
        if any(graph.num_uses(o) for o in op.outputs):
            continue
        producers = [graph.values[v].producer for v in op.inputs]
        graph.remove_op(op_id)
        removed += 1
        work.extend(p for p in producers if p is not None)
    return removed


def add_constant(graph: Graph, array: np.ndarray, base: str, layer: str | None = None) -> str:
    """A new (non-trainable) constant named after ``base``."""
    return graph.add_constant(graph.unique_name(base), np.ascontiguousarray(array), layer=layer)


def emit(graph: Graph, op_type: str, *inputs: str, layer: str | None = None, name: str | None = None,
         **attrs: Any) -> str:
    """Add one typed op (shape rule from the registry) and return its output value."""
    from graphc.ops.builder import OpBuilder

    return OpBuilder(graph, layer).emit(op_type, *inputs, name=name, **attrs)
