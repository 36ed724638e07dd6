"""Symbolic tensors and call history (Keras's KerasTensor and Node).

A :class:`KerasTensor` has a shape (``None`` for free dims) and a dtype, and remembers
which layer call produced it: ``_keras_history = (layer, node_index, tensor_index)``. Its
``_keras_mask`` describes the mask the tensor carries (a KerasTensor, or None), as Keras's.
A :class:`Node` records one call of a layer: its arguments and its outputs. Models are
found by walking these records back from their outputs.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from graphc.frontend import nest

if TYPE_CHECKING:
    from graphc.frontend.layer import Layer

_ids = itertools.count()


class KerasTensor:
    """A symbolic tensor: shape, dtype and the layer call that produced it."""

    def __init__(self, shape, dtype: str = "float32", name: str | None = None, history=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtype
        n = next(_ids)
        self.name = name or ("keras_tensor" if n == 0 else f"keras_tensor_{n}")
        self._keras_history = history
        self._keras_mask: KerasTensor | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    def __len__(self) -> int:
        if not self.shape or self.shape[0] is None:
            raise TypeError("len() of a symbolic tensor with an unknown first dimension")
        return self.shape[0]

    def __bool__(self) -> bool:
        raise TypeError("a symbolic KerasTensor has no truth value; it only describes a tensor")

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is symbolic: it has no values. Build a Model with it and call "
                        "predict(), or call the layer on NumPy arrays.")


class Node:
    """One call of a layer: the arguments it got and the tensors it returned."""

    def __init__(self, layer: Layer, call_args: Any, call_kwargs: dict, outputs: Any):
        self.layer = layer
        self.call_args = call_args
        self.call_kwargs = call_kwargs
        self.outputs = outputs
        self.input_tensors = [t for t in nest.flatten((call_args, call_kwargs)) if isinstance(t, KerasTensor)]
        self.output_tensors = [t for t in nest.flatten(outputs) if isinstance(t, KerasTensor)]
        node_index = len(layer._inbound_nodes)
        layer._inbound_nodes.append(self)
        for i, t in enumerate(self.output_tensors):
            t._keras_history = (layer, node_index, i)

    @property
    def parent_nodes(self) -> list[Node]:
        parents = []
        for t in self.input_tensors:
            layer, node_index, _ = t._keras_history
            parents.append(layer._inbound_nodes[node_index])
        return parents

    @property
    def is_input(self) -> bool:
        return not self.input_tensors

    def __repr__(self) -> str:
        return f"<Node of {self.layer.name!r}: {len(self.input_tensors)} in, {len(self.output_tensors)} out>"
