"""``Input`` and ``InputLayer``: where a functional model's tensors start."""

from __future__ import annotations

from graphc.frontend import state
from graphc.frontend.layer import Layer, _shape_tuple
from graphc.frontend.tensor import KerasTensor, Node
from graphc.ir.types import normalize_dtype


class InputLayer(Layer):
    """The layer behind an ``Input`` tensor (no weights, no computation)."""

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None,
                 sparse=None, input_tensor=None, **kwargs):
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        if sparse:
            raise ValueError("sparse inputs are not supported by graphc")
        if shape is not None and batch_shape is not None:
            raise ValueError("give either shape= or batch_shape= to Input, not both")
        if shape is None and batch_shape is None:
            raise ValueError("Input needs shape= (without the batch dimension) or batch_shape=")
        name = name or state.unique_name("input_layer")
        super().__init__(name=name, dtype=None, **kwargs)
        self.dtype = normalize_dtype(dtype or "float32")
        if batch_shape is not None:
            batch_shape = _shape_tuple(batch_shape)
        else:
            batch_shape = (batch_size,) + _shape_tuple(shape)
        for d in batch_shape:
            if d is not None and d <= 0:
                raise ValueError(f"Input {name!r}: dimensions must be positive or None, got {batch_shape}")
        self.batch_shape = batch_shape
        self.built = True
        tensor = KerasTensor(batch_shape, self.dtype, name=self.name)
        Node(self, (), {}, tensor)
        self._output_tensor = tensor

    def get_config(self) -> dict:
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype, "sparse": False,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> InputLayer:
        return cls(batch_shape=config["batch_shape"], dtype=config.get("dtype"), name=config["name"])


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None,
          tensor=None, optional=False) -> KerasTensor:  # noqa: N802 (Keras's name)
    """A symbolic input tensor: ``Input(shape=(32,))`` is a batch of 32-vectors."""
    if tensor is not None:
        raise ValueError("Input(tensor=...) is not supported by graphc")
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse,
                       batch_shape=batch_shape, name=name)
    return layer.output
