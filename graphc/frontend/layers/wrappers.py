"""Layer wrappers: ``Wrapper`` (the base), ``TimeDistributed`` and ``Bidirectional``.

``TimeDistributed(layer)`` applies one layer (or a whole Model) to every time step of a
``(batch, time, ...)`` input with the same weights. It lowers to one call of the inner
layer on a ``(batch * time, ...)`` view: reshape, inner layer, reshape back to
``(batch, time, ...)``. Batch and time may be free dims; the reshape targets then hold
symbolic dims that are evaluated when the graph runs. A mask passes through (the output keeps
the input's), and a wrapped layer that takes one gets each step's, reshaped the same way.

``Bidirectional(layer)`` runs a recurrent layer forwards and a copy of it backwards
(``go_backwards``; or the ``backward_layer`` given) over the same sequence and merges their
outputs (``merge_mode``: concat, sum, mul, ave, or None for both), the backward sequence
flipped back to input order first. Its weights are the forward layer's then the backward
one's; with ``return_state`` the states follow, forward ones first, as in Keras.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import nest
from graphc.frontend.layer import Layer, lower_takes
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor
from graphc.ir import dims
from graphc.ops.registry import ShapeError

__all__ = ["Wrapper", "TimeDistributed", "Bidirectional"]

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


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


def _copy_layer(layer: Layer, **overrides) -> Layer:
    """A fresh layer from ``layer``'s config with ``overrides`` (as Keras clones the wrapped layer)."""
    config = {**layer.get_config(), **overrides}
    return type(layer).from_config(config)


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


class Bidirectional(Layer):
    """A recurrent layer run over the sequence both ways, its two outputs merged (Keras's)."""

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        for what, value in (("layer", layer), ("backward_layer", backward_layer)):
            if value is not None and not (isinstance(value, Layer) and hasattr(value, "go_backwards")
                                          and hasattr(value, "return_sequences")):
                raise ValueError(f"Bidirectional {what} must be a recurrent layer instance (LSTM, GRU, SimpleRNN, "
                                 f"RNN), got {type(value).__name__}: {value!r}")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"Bidirectional merge_mode must be one of 'sum', 'mul', 'ave', 'concat' or None, "
                             f"got {merge_mode!r}")
        super().__init__(**kwargs)
        self.forward_layer = _copy_layer(layer, name=f"forward_{_strip(layer.name, 'forward_')}")
        if backward_layer is None:
            backward_layer = _copy_layer(layer, name=f"backward_{_strip(layer.name, 'backward_')}",
                                         go_backwards=True)
        self.backward_layer = backward_layer
        if self.forward_layer.go_backwards == self.backward_layer.go_backwards:
            raise ValueError(f"Bidirectional {self.name!r}: the forward and backward layers should have different "
                             f"go_backwards values, both have {self.forward_layer.go_backwards}")
        for attr in ("stateful", "return_sequences", "return_state"):
            f, b = getattr(self.forward_layer, attr), getattr(self.backward_layer, attr)
            if f != b:
                raise ValueError(f"Bidirectional {self.name!r}: the forward and backward layers should have the "
                                 f"same {attr}, got {f} (forward) and {b} (backward)")
        for sub in (self.forward_layer, self.backward_layer):
            if hasattr(sub, "zero_output_for_mask"):  # Keras zeroes the masked steps of both sequences
                sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = self.forward_layer.return_sequences
        self.return_state = self.forward_layer.return_state
        self.stateful = self.forward_layer.stateful
        self._initial_weights = list(weights) if weights is not None else None

    @property
    def layer(self) -> Layer:
        """The wrapped layer, as Keras's config records it: the forward one."""
        return self.forward_layer

    def _sublayers(self) -> list[Layer]:
        return [self.forward_layer, self.backward_layer]

    def check_inputs(self, inputs) -> None:
        self.forward_layer.check_inputs(inputs)

    def build(self, sequences_shape, initial_state_shape=None) -> None:
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(sequences_shape)
        if self._initial_weights is not None:
            half = len(self._initial_weights) // 2
            self.forward_layer.set_weights(self._initial_weights[:half])
            self.backward_layer.set_weights(self._initial_weights[half:])
            self._initial_weights = None
        self.built = True

    def lower(self, ctx: LowerContext, inputs, initial_state=None, mask=None, training=None, **kwargs):
        if kwargs:
            raise TypeError(f"Bidirectional.call got unexpected argument(s) {sorted(kwargs)}")
        forward_state = backward_state = None
        if initial_state is not None:
            states = nest.flatten(initial_state)
            if len(states) % 2:
                raise ShapeError(f"Bidirectional initial_state holds the forward layer's states then the backward "
                                 f"layer's: an even number of tensors, got {len(states)}")
            forward_state, backward_state = states[:len(states) // 2], states[len(states) // 2:]
        outputs = []
        for sub, state in ((self.forward_layer, forward_state), (self.backward_layer, backward_state)):
            call = {"training": training} if training is not None else {}
            if mask is not None and lower_takes(sub, "mask"):
                call["mask"] = mask
            outputs.append(sub.lower(ctx, inputs, initial_state=state, **call))
        y, y_rev = outputs
        states = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = ctx.emit("reverse_time", y_rev)
        if self.merge_mode is None:
            merged = [y, y_rev]
        elif self.merge_mode == "concat":
            merged = [ctx.concat(y, y_rev, axis=-1)]
        elif self.merge_mode == "sum":
            merged = [ctx.add(y, y_rev)]
        elif self.merge_mode == "mul":
            merged = [ctx.mul(y, y_rev)]
        else:
            half = ctx.constant(np.asarray(2.0, dtype=ctx.dtype(y)), "two")
            merged = [ctx.div(ctx.add(y, y_rev), half)]
        out = merged + states
        return out if len(out) > 1 else out[0]

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        """Keras's: the input mask on returned sequences (each of the two without a merge)."""
        if isinstance(mask, list):
            mask = mask[0]
        if self.return_sequences:
            return [mask, mask] if self.merge_mode is None else mask
        return [None, None] if self.merge_mode is None else None

    def get_config(self) -> dict:
        return {**super().get_config(), "merge_mode": self.merge_mode,
                "layer": {"class_name": type(self.forward_layer).__name__, "config": self.forward_layer.get_config()},
                "backward_layer": {"class_name": type(self.backward_layer).__name__,
                                   "config": self.backward_layer.get_config()}}
