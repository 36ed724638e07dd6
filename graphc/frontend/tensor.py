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
        _refuse_in_trace("the truth value of a tensor (`if`, `while`, `and`/`or`, `not` or bool())")
        raise TypeError("a symbolic KerasTensor has no truth value; it only describes a tensor")

    def __array__(self, *args, **kwargs):
        _refuse_in_trace("a tensor as a NumPy array")
        raise TypeError(f"{self!r} is symbolic: it has no values. Build a Model with it and call "
                        "predict(), or call the layer on NumPy arrays.")

    # ------------------------------------------------------------------ operators
    # As in Keras, each operator applies the ``keras.ops`` function of the same meaning: on
    # symbolic tensors it adds an operation node (``Add``, ``GetItem``...) to the functional graph,
    # inside a traced ``call`` it emits IR ops. ``==`` keeps Python's identity (tensors are
    # dictionary keys and list members); ``ops.equal`` compares elementwise.
    __array_ufunc__ = None  # NumPy defers to the reflected operators: ``array * tensor`` works

    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().subtract(self, other)

    def __rsub__(self, other):
        return _ops().subtract(other, self)

    def __mul__(self, other):
        return _ops().multiply(self, other)

    def __rmul__(self, other):
        return _ops().multiply(other, self)

    def __truediv__(self, other):
        return _ops().true_divide(self, other)

    def __rtruediv__(self, other):
        return _ops().true_divide(other, self)

    def __pow__(self, other):
        return _ops().power(self, other)

    def __rpow__(self, other):
        return _ops().power(other, self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __neg__(self):
        return _ops().negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops().absolute(self)

    def __lt__(self, other):
        return _ops().less(self, other)

    def __le__(self, other):
        return _ops().less_equal(self, other)

    def __gt__(self, other):
        return _ops().greater(self, other)

    def __ge__(self, other):
        return _ops().greater_equal(self, other)

    def __ne__(self, other):
        return _ops().not_equal(self, other)

    __hash__ = object.__hash__

    def __and__(self, other):
        return _ops().logical_and(self, other)

    def __rand__(self, other):
        return _ops().logical_and(other, self)

    def __or__(self, other):
        return _ops().logical_or(self, other)

    def __ror__(self, other):
        return _ops().logical_or(other, self)

    def __invert__(self):
        return _ops().logical_not(self)

    def __getitem__(self, key):
        return _ops().get_item(self, key)

    def __iter__(self):
        _refuse_in_trace("iteration over a tensor")
        raise TypeError("a symbolic KerasTensor is not iterable; index it (x[:, 0]) or use graphc.ops")


def _ops():
    """``graphc.frontend.operations`` (imported on first use: it builds on this module)."""
    from graphc.frontend import operations

    return operations


def _refuse_in_trace(what: str) -> None:
    """Inside a traced ``call``, the error naming the layer and line that need a tensor's value."""
    from graphc.frontend import tracing

    tracing.refuse(what)


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
