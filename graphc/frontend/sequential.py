"""Sequential: a plain stack of layers, each feeding the next.

Built as soon as its input shape is known (a leading ``Input``, or ``input_shape=`` on
the first layer), otherwise on the first call or ``predict``; once built it is a
functional model whose ``layers`` leave out the InputLayer, as in Keras 3.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import nest, state
from graphc.frontend.input_layer import InputLayer
from graphc.frontend.layer import Layer
from graphc.frontend.model import Model
from graphc.frontend.tensor import KerasTensor


class Sequential(Model):
    """``Sequential([layer, ...])`` or ``Sequential()`` then ``add(layer)``."""

    def __init__(self, layers=None, trainable: bool = True, name: str | None = None):
        Layer.__init__(self, name=name or state.unique_name("sequential"), trainable=trainable)
        self._init_empty()
        self._stack: list[Layer] = []
        self.built = False
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_rebuild()

    def add(self, layer, rebuild: bool = True) -> None:
        """Append a layer (or an ``Input`` tensor as the first element)."""
        if isinstance(layer, KerasTensor):
            origin = layer._keras_history[0]
            if not isinstance(origin, InputLayer):
                raise ValueError("only Input tensors or layers can be added to a Sequential model")
            layer = origin
        if not isinstance(layer, Layer):
            raise TypeError(f"only Layer instances can be added to a Sequential model, got {layer!r}")
        if isinstance(layer, InputLayer) and self._stack:
            raise ValueError("an Input can only be the first element of a Sequential model")
        if not self._stack and not isinstance(layer, InputLayer) and layer._batch_input_shape is not None:
            self._stack.append(InputLayer(batch_shape=layer._batch_input_shape, dtype=None))
        names = [lay.name for lay in self._stack]
        if layer.name in names:
            raise ValueError(f'all layers added to a Sequential model should have unique names; '
                             f'"{layer.name}" is already the name of a layer in this model')
        self._stack.append(layer)
        if rebuild:
            self._maybe_rebuild()

    def pop(self) -> Layer:
        if not self.layers:
            raise IndexError("there are no layers in the model")
        layer = self._stack.pop()
        self.built = False
        self._maybe_rebuild()
        return layer

    def _maybe_rebuild(self) -> None:
        if self._stack and isinstance(self._stack[0], InputLayer) and len(self._stack) > 1:
            self._build_from(self._stack[0])

    def _build_from(self, input_layer: InputLayer) -> None:
        x = input_layer.output
        inputs = x
        for layer in self._stack[1:]:
            x = layer(x)
        self._init_graph(inputs, x)

    def build(self, input_shape=None) -> None:
        if self.built and self._nodes:
            return
        if not self._stack or not isinstance(self._stack[0], InputLayer):
            if input_shape is None:
                raise ValueError(f"Sequential model {self.name!r} has no input shape yet; add an Input "
                                 "first or pass input_shape= to its first layer")
            self._stack.insert(0, InputLayer(batch_shape=tuple(input_shape)))
        self._build_from(self._stack[0])

    def _ensure_built(self, x) -> None:
        if not (self.built and self._nodes):
            arr = np.asarray(nest.flatten(x)[0])
            self.build((None,) + arr.shape[1:])

    @property
    def layers(self) -> list[Layer]:
        return [lay for lay in self._stack if not isinstance(lay, InputLayer)]

    def _sublayers(self) -> list[Layer]:
        return self.layers

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        self._ensure_built(x)
        return super().predict(x, batch_size=batch_size)

    def _symbolic_call(self, inputs, kwargs):
        if not (self.built and self._nodes):
            t = nest.flatten(inputs)[0]
            self.build(t.shape)
        return super()._symbolic_call(inputs, kwargs)

    def count_params(self) -> int:
        if not self._nodes and not all(lay.built for lay in self.layers):
            raise ValueError(f"Sequential model {self.name!r} is not built yet")
        return super().count_params()
