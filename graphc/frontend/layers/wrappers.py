"""Layer wrappers: ``Wrapper`` (the base) and ``TimeDistributed``.

``TimeDistributed(layer)`` applies one layer (or a whole Model) to every time step of a
``(batch, time, ...)`` input with the same weights. It lowers to one call of the inner
layer on a ``(batch * time, ...)`` view: reshape, inner layer, reshape back to
``(batch, time, ...)``. Batch and time may be free dims; the reshape targets then hold
symbolic dims that are evaluated when the graph runs. A mask passes through (the output keeps
the input's), and a wrapped layer that takes one gets each step's, reshaped the same way.
"""

from __future__ import annotations

from graphc.frontend.layer import Layer, lower_takes
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor
from graphc.ir import dims
from graphc.ops.registry import ShapeError

__all__ = ["Wrapper", "TimeDistributed"]


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Wrapper(Layer):
    """Base of the layers that wrap another layer; the wrapped layer's weights are this one's."""

    def __init__(self, layer: Layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"{type(self).__name__} wraps a layer (a graphc Layer or Model instance), "
                             f"got {type(layer).__name__}: {layer!r}")
        super().__init__(**kwargs)
        self.layer = layer

    def _sublayers(self) -> list[Layer]:
        return [self.layer]

    def get_config(self) -> dict:
        return {**super().get_config(),
                "layer": {"class_name": type(self.layer).__name__, "config": self.layer.get_config()}}


class TimeDistributed(Wrapper):
    """Applies ``layer`` to every temporal slice ``x[:, t]`` of a ``(batch, time, ...)`` input."""

    supports_masking = True

    def _single(self, inputs):
        if isinstance(inputs, (list, tuple, dict)):
            raise ShapeError(f"TimeDistributed takes a single input tensor, got {len(inputs)} inputs")
        return inputs

    def _child(self, x: KerasTensor) -> KerasTensor:
        if len(x.shape) < 3:
            raise ShapeError(f"TimeDistributed needs an input of rank >= 3 (batch, time, ...), got shape "
                             f"{_fmt(x.shape)}")
        return KerasTensor((x.shape[0],) + tuple(x.shape[2:]), x.dtype)

    def check_inputs(self, inputs) -> None:
        child = self._child(self._single(inputs))
        try:
            self.layer.check_inputs(child)
        except ShapeError as exc:
            raise ShapeError(f"the wrapped layer {self.layer.name!r} ({type(self.layer).__name__}) cannot "
                             f"take each time step of shape {_fmt(child.shape)}: {exc}") from None

    def _input_shapes(self, inputs):
        return inputs.shape

    def build(self, input_shape) -> None:
        if not self.layer.built:
            child = KerasTensor((input_shape[0],) + tuple(input_shape[2:]))
            self.layer._maybe_build(child)
        self.built = True

    def lower(self, ctx: LowerContext, inputs, mask=None, **kwargs):
        x = self._single(inputs)
        shape = ctx.shape(x)
        if len(shape) < 3:
            raise ShapeError(f"TimeDistributed needs an input of rank >= 3, got {len(shape)}")
        batch, time, rest = shape[0], shape[1], tuple(shape[2:])
        flat = ctx.reshape(x, shape=(dims.mul(batch, time), *rest))
        if mask is not None and lower_takes(self.layer, "mask"):
            kwargs["mask"] = self._step_masks(ctx, mask, shape)
        y = self.layer.lower(ctx, flat, **kwargs)
        if not isinstance(y, str):
            raise ShapeError(f"TimeDistributed needs a layer with a single output; "
                             f"{self.layer.name!r} returns {len(y)}")
        return ctx.reshape(y, shape=(batch, time, *tuple(ctx.shape(y))[1:]))

    @staticmethod
    def _step_masks(ctx: LowerContext, mask: str, shape) -> str:
        """The (batch, time, ...) mask as the wrapped layer's (batch * time, ...) one."""
        mshape = ctx.shape(mask)
        if len(mshape) < 2:
            raise ShapeError(f"the mask passed to TimeDistributed must be at least 2-D (batch, timesteps), got "
                             f"shape {_fmt(_none_dims(mshape))}")
        if not (dims.compatible(mshape[0], shape[0]) and dims.compatible(mshape[1], shape[1])):
            raise ShapeError(f"the mask passed to TimeDistributed has shape {_fmt(_none_dims(mshape))}, "
                             f"incompatible with the input shape {_fmt(_none_dims(shape))}: the batch and "
                             "timestep dimensions must match")
        return ctx.reshape(mask, shape=(dims.mul(shape[0], shape[1]), *mshape[2:]))


def _none_dims(shape) -> tuple:
    return tuple(d if isinstance(d, int) else None for d in shape)
