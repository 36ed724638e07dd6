"""The IR verifier: structural checks, plus type checks when given a shape rule.

Structural checks need only the IR: acyclic, every value defined exactly once, every
op input defined, graph outputs defined, constants matching their declared types.
Type checks re-run each op's shape/dtype rule; the rule is passed in (``infer``) so
that the IR does not depend on the op registry. ``graphc.verify`` wires both together.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir.graph import Graph, IRError, Op
from graphc.ir.types import TensorType

InferFn = Callable[[Op, list[TensorType]], list[TensorType]]


class VerificationError(IRError):
    """The graph breaks an IR invariant; the message names the op and its layer."""


def _where(op: Op) -> str:
    return f"op {op.id!r} ({op.type}" + (f", layer {op.layer!r})" if op.layer else ")")


def verify(graph: Graph, infer: InferFn | None = None) -> None:
    """Raise VerificationError describing the first broken invariant, if any."""
    cycle = graph.find_cycle()
    if cycle:
        raise VerificationError(f"graph {graph.name!r} has a cycle: "
                                + " -> ".join(_where(graph.op(i)) for i in cycle + cycle[:1]))
    defined: set[str] = set()
    for name in graph.inputs:
        v = graph.values.get(name)
        if v is None or v.kind != "input":
            raise VerificationError(f"graph input {name!r} is not declared as an input value")
        defined.add(name)
    for name, v in graph.values.items():
        if v.kind == "constant":
            if name not in graph.constants:
                raise VerificationError(f"constant {name!r} has no data")
            if TensorType.of(graph.constants[name]) != v.type:
                raise VerificationError(f"constant {name!r} is declared {v.type} but holds "
                                        f"{TensorType.of(graph.constants[name])}")
            defined.add(name)
        elif v.kind == "input" and name not in graph.inputs:
            raise VerificationError(f"value {name!r} is an input but not listed in graph.inputs")
    for op in graph.ops():
        for v in op.inputs:
            if v not in defined:
                raise VerificationError(f"{_where(op)} reads {v!r} before it is defined")
        for i, out in enumerate(op.outputs):
            value = graph.values.get(out)
            if value is None or value.producer != op.id or value.index != i:
                raise VerificationError(f"{_where(op)} output {out!r} is not recorded as produced by it")
            if out in defined:
                raise VerificationError(f"value {out!r} is defined twice")
            defined.add(out)
        if infer is not None:
            in_types = [graph.values[v].type for v in op.inputs]
            try:
                expected = infer(op, in_types)
            except Exception as exc:  # the rule's own message names the problem
                raise VerificationError(f"{_where(op)}: {exc}") from exc
            got = [graph.values[o].type for o in op.outputs]
            if len(expected) != len(got):
                raise VerificationError(f"{_where(op)} has {len(got)} outputs, its rule gives {len(expected)}")
            for out, e, g in zip(op.outputs, expected, got):
                if e.dtype != g.dtype or len(e.shape) != len(g.shape) or any(
                        isinstance(a, int) and isinstance(b, int) and a != b
                        for a, b in zip(e.shape, g.shape)):
                    raise VerificationError(f"{_where(op)} output {out!r} is typed {g} but its rule gives {e}")
    for name in graph.outputs:
        if name not in defined:
            raise VerificationError(f"graph output {name!r} is not defined")
    produced = {v for v, val in graph.values.items() if val.kind == "op"}
    orphans = produced - defined
    if orphans:
        raise VerificationError(f"values {sorted(orphans)} have no producing op in the graph")
