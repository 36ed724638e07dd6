"""The graphc IR: a dataflow graph of primitive ops, stored in networkx.

Nodes of the underlying ``networkx.MultiDiGraph`` are ops; an edge ``producer -> consumer``
carries one tensor value (its name and ``TensorType``). Graph inputs and constants
(weights) are values without a producing op. Every value has exactly one definition.

This is the only module of graphc that imports networkx. It knows nothing about what the
ops mean: shape rules, references and lowerings live in ``graphc.ops``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from graphc.ir.types import TensorType


class IRError(ValueError):
    """A malformed graph or a misuse of the graph API."""


@dataclass
class Value:
    """A tensor value: a graph input, a constant, or an op result."""

    name: str
    type: TensorType
    kind: str  # "input" | "constant" | "op"
    producer: str | None = None  # op id for kind == "op"
    index: int = 0  # output index within the producer
    trainable: bool = False  # constants only
    layer: str | None = None  # the user's layer that owns this constant or produced this value


@dataclass
class Op:
    """One primitive operation."""

    id: str
    type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None  # provenance: the user's layer this op came from


class Graph:
    """A typed dataflow graph with named inputs, outputs and constants."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self._nx = nx.MultiDiGraph()
        self.values: dict[str, Value] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}
        self._counter = itertools.count()
        self._order: dict[str, int] = {}
        self._topo: list[str] | None = None

    # ------------------------------------------------------------------ building
    def _new_value(self, value: Value) -> str:
        if value.name in self.values:
            raise IRError(f"value {value.name!r} is already defined")
        self.values[value.name] = value
        return value.name

    def unique_name(self, base: str) -> str:
        """``base`` if no value or op uses it yet, else ``base_1``, ``base_2``..."""
        if base not in self.values and base not in self._nx:
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in self.values and cand not in self._nx:
                return cand
        raise AssertionError  # pragma: no cover

    def add_input(self, name: str, type: TensorType) -> str:
        self._new_value(Value(name, type, "input"))
        self.inputs.append(name)
        return name

    def add_constant(self, name: str, array: np.ndarray, *, trainable: bool = False,
                     layer: str | None = None) -> str:
        array = np.asarray(array)
        self._new_value(Value(name, TensorType.of(array), "constant", trainable=trainable, layer=layer))
        self.constants[name] = array
        return name

    def set_constant(self, name: str, array: np.ndarray) -> None:
        """Replace a constant's data; its type must not change."""
        value = self.values[name]
        array = np.asarray(array)
        if value.kind != "constant":
            raise IRError(f"{name!r} is not a constant")
        if TensorType.of(array) != value.type:
            raise IRError(f"constant {name!r} is {value.type}, got {TensorType.of(array)}")
        self.constants[name] = array

    def add_op(self, op_type: str, inputs: Iterable[str], output_types: list[TensorType],
               attrs: dict[str, Any] | None = None, *, layer: str | None = None,
               name: str | None = None, output_names: list[str] | None = None) -> Op:
        """Append an op; its output values are named after the op id unless named explicitly."""
        inputs = list(inputs)
        for v in inputs:
            if v not in self.values:
                raise IRError(f"op {op_type!r} ({layer or 'no layer'}) reads undefined value {v!r}")
        op_id = self.unique_name(name or op_type)
        if output_names is not None:
            outputs = list(output_names)
        elif len(output_types) == 1:
            outputs = [op_id]
        else:
            outputs = [f"{op_id}:{i}" for i in range(len(output_types))]
        op = Op(op_id, op_type, inputs, outputs, dict(attrs or {}), layer)
        self._nx.add_node(op_id, op=op)
        self._order[op_id] = next(self._counter)
        for i, (out, t) in enumerate(zip(outputs, output_types)):
            self._new_value(Value(out, t, "op", producer=op_id, index=i, layer=layer))
        self._connect(op)
        self._topo = None
        return op

    def _connect(self, op: Op) -> None:
        for idx, v in enumerate(op.inputs):
            producer = self.values[v].producer
            if producer is not None:
                self._nx.add_edge(producer, op.id, key=(v, idx), value=v, type=self.values[v].type)

    def _disconnect(self, op: Op) -> None:
        for idx, v in enumerate(op.inputs):
            producer = self.values[v].producer
            if producer is not None and self._nx.has_edge(producer, op.id, key=(v, idx)):
                self._nx.remove_edge(producer, op.id, key=(v, idx))

    def set_outputs(self, outputs: Iterable[str]) -> None:
        outputs = list(outputs)
        for v in outputs:
            if v not in self.values:
                raise IRError(f"graph output {v!r} is not defined")
        self.outputs = outputs

    # ------------------------------------------------------------------ queries
    def op(self, op_id: str) -> Op:
        try:
            return self._nx.nodes[op_id]["op"]
        except KeyError:
            raise IRError(f"no op {op_id!r} in graph {self.name!r}") from None

    def has_op(self, op_id: str) -> bool:
        return op_id in self._nx

    def type_of(self, value: str) -> TensorType:
        return self.values[value].type

    def producer(self, value: str) -> Op | None:
        p = self.values[value].producer
        return None if p is None else self.op(p)

    def consumers(self, value: str) -> list[tuple[Op, int]]:
        """(op, input index) for every use of ``value`` by an op, in topological order."""
        uses = []
        producer = self.values[value].producer
        if producer is not None:
            candidates = {c for c in self._nx.successors(producer)}
        else:
            candidates = {o.id for o in self._ops_unordered() if value in o.inputs}
        for op_id in sorted(candidates, key=self._order.__getitem__):
            op = self.op(op_id)
            uses.extend((op, i) for i, v in enumerate(op.inputs) if v == value)
        return uses

    def num_uses(self, value: str) -> int:
        return len(self.consumers(value)) + self.outputs.count(value)

    def _ops_unordered(self) -> Iterator[Op]:
        for _, data in self._nx.nodes(data=True):
            yield data["op"]

    def ops(self) -> list[Op]:
        """All ops in a deterministic topological order (insertion order breaks ties)."""
        if self._topo is None:
            try:
                order = nx.lexicographical_topological_sort(self._nx, key=self._order.__getitem__)
                self._topo = list(order)
            except nx.NetworkXUnfeasible:
                cycle = nx.find_cycle(self._nx)
                raise IRError(f"graph {self.name!r} has a cycle through ops "
                              f"{[e[0] for e in cycle]}") from None
        return [self.op(i) for i in self._topo]

    def __len__(self) -> int:
        return self._nx.number_of_nodes()

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self._ops_unordered():
            counts[op.type] = counts.get(op.type, 0) + 1
        return dict(sorted(counts.items()))

    def is_acyclic(self) -> bool:
        return nx.is_directed_acyclic_graph(self._nx)

    def find_cycle(self) -> list[str] | None:
        """The op ids along one cycle (each feeding the next, the last feeding the first), or None."""
        try:
            return [edge[0] for edge in nx.find_cycle(self._nx)]
        except nx.NetworkXNoCycle:
            return None

    def param_count(self) -> int:
        return int(sum(a.size for a in self.constants.values()))

    @property
    def nx_graph(self) -> nx.MultiDiGraph:
        """The underlying networkx graph (read-only by convention)."""
        return self._nx

    # ------------------------------------------------------------------ rewriting
    def replace_all_uses(self, old: str, new: str) -> None:
        """Make every reader of ``old`` (ops and graph outputs) read ``new`` instead."""
        if old == new:
            return
        if new not in self.values:
            raise IRError(f"replacement value {new!r} is not defined")
        for op, _ in self.consumers(old):
            self._disconnect(op)
            op.inputs = [new if v == old else v for v in op.inputs]
            self._connect(op)
        self.outputs = [new if v == old else v for v in self.outputs]
        self._topo = None

    def set_op_inputs(self, op_id: str, inputs: list[str]) -> None:
        op = self.op(op_id)
        for v in inputs:
            if v not in self.values:
                raise IRError(f"op {op_id!r} would read undefined value {v!r}")
        self._disconnect(op)
        op.inputs = list(inputs)
        self._connect(op)
        self._topo = None

    def remove_op(self, op_id: str) -> None:
        """Remove an op whose outputs nothing reads any more."""
        op = self.op(op_id)
        for out in op.outputs:
            if self.num_uses(out):
                raise IRError(f"cannot remove op {op_id!r}: its output {out!r} is still used")
        self._nx.remove_node(op_id)
        del self._order[op_id]
        for out in op.outputs:
            del self.values[out]
        self._topo = None

    def remove_constant(self, name: str) -> None:
        if self.num_uses(name):
            raise IRError(f"cannot remove constant {name!r}: it is still used")
        del self.values[name]
        del self.constants[name]

    def rename_value(self, old: str, new: str) -> None:
        """Rename a value everywhere (used to give graph outputs their user-facing names)."""
        if old == new:
            return
        if new in self.values:
            raise IRError(f"cannot rename {old!r} to {new!r}: the name is taken")
        value = self.values.pop(old)
        value.name = new
        self.values[new] = value
        if old in self.constants:
            self.constants[new] = self.constants.pop(old)
        if value.producer is not None:
            producer = self.op(value.producer)
            producer.outputs = [new if v == old else v for v in producer.outputs]
        for op in list(self._ops_unordered()):
            if old in op.inputs:
                self._disconnect_raw(op, old)
                op.inputs = [new if v == old else v for v in op.inputs]
                self._connect(op)
        self.inputs = [new if v == old else v for v in self.inputs]
        self.outputs = [new if v == old else v for v in self.outputs]
        self._topo = None

    def _disconnect_raw(self, op: Op, old: str) -> None:
        for u, v, k in list(self._nx.in_edges(op.id, keys=True)):
            if k[0] == old:
                self._nx.remove_edge(u, v, key=k)

    def copy(self, order: list[Op] | None = None) -> Graph:
        """A structural copy; constant arrays are shared (passes must not mutate them in place). With ``order``
        (a topological order of this graph's ops), the ops are inserted in it, and ``ops()`` then keeps it."""
        g = Graph(self.name)
        g.meta = dict(self.meta)
        for v in self.values.values():
            if v.kind == "input":
                g.add_input(v.name, v.type)
            elif v.kind == "constant":
                g.add_constant(v.name, self.constants[v.name], trainable=v.trainable, layer=v.layer)
        g.inputs = list(self.inputs)
        for op in self.ops() if order is None else order:
            new = g.add_op(op.type, op.inputs, [self.values[o].type for o in op.outputs],
                           dict(op.attrs), layer=op.layer, name=op.id, output_names=op.outputs)
            assert new.outputs == op.outputs
        g.outputs = list(self.outputs)
        return g

    def __str__(self) -> str:
        from graphc.ir.printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return (f"<graphc.ir.Graph {self.name!r}: {len(self.inputs)} inputs, {len(self)} ops, "
                f"{len(self.outputs)} outputs>")
