"""Lowering context: what a layer's ``lower`` method uses to emit IR ops.

A :class:`LowerContext` is an :class:`~graphc.ops.OpBuilder` (ops record the current layer as
their provenance) that also turns the layer's weight variables into graph constants,
once per variable: a layer called twice, or a model nested in another, reads the same
constant. ``training`` tells layers such as Dropout and BatchNormalization which graph
to emit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphc.ir.graph import Graph
from graphc.ops.builder import OpBuilder

if TYPE_CHECKING:
    from graphc.frontend.layer import Variable


class LowerContext(OpBuilder):
    """Emits ops for one layer at a time into a shared graph."""

    def __init__(self, graph: Graph, layer: str | None = None, *, training: bool = False,
                 params: dict | None = None):
        super().__init__(graph, layer)
        self.training = training
        self.params: dict[int, tuple[Variable, str]] = {} if params is None else params

    def for_layer(self, name: str) -> LowerContext:
        """A context emitting on behalf of layer ``name`` into the same graph."""
        return LowerContext(self.graph, name, training=self.training, params=self.params)

    def param(self, variable: Variable) -> str:
        """The graph constant holding ``variable`` (created on first use)."""
        entry = self.params.get(id(variable))
        if entry is None:
            name = self.graph.unique_name(variable.path)
            self.graph.add_constant(name, variable.value, trainable=variable.trainable,
                                    layer=variable.path.rsplit("/", 1)[0])
            entry = (variable, name)
            self.params[id(variable)] = entry
        return entry[1]

    def shape(self, value: str) -> tuple:
        return self.graph.type_of(value).shape

    def dtype(self, value: str) -> str:
        return self.graph.type_of(value).dtype

    def rank(self, value: str) -> int:
        return self.graph.type_of(value).rank
