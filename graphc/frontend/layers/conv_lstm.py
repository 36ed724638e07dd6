"""Convolutional LSTMs: ConvLSTM1D, ConvLSTM2D and ConvLSTM3D (Keras 3).

Keras's cell, step by step: the gates are convolutions, ``z = conv(x_t, kernel) + bias +
conv(h, recurrent_kernel)`` (the input convolution with the layer's strides, padding and
dilation, the recurrent one with unit strides and 'same' padding), split into i, f, c, o in
Keras's order; ``c = f*c + i*activation(z_c)``, ``h = o*activation(c)``. Weights, their
shapes, order and initializers (the forget gate's bias starting at one) are Keras's.

The sequence is unrolled into ordinary ops: one convolution over every step's input at once,
then per step the recurrent convolution and the gate arithmetic. Every backend and the
gradient therefore come from those ops, and the number of time steps must be known (the
spatial sizes too, as Keras requires); a free number of steps is refused. Masks and, in
training, ``dropout``/``recurrent_dropout`` are refused (at inference they do nothing, as in
Keras); so is ``stateful=True``.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import activations, initializers, nest
from graphc.frontend.layer import Layer
from graphc.frontend.layers.conv import (
    SPATIAL_NAMES,
    check_data_format,
    standardize_padding,
    standardize_tuple,
)
from graphc.frontend.lowering import LowerContext
from graphc.ir.types import is_float
from graphc.ops.conv import keras_pads
from graphc.ops.registry import ShapeError

__all__ = ["ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"]


class _ConvLSTM(Layer):
    """An LSTM whose input and recurrent transformations are convolutions, over
    (batch, time, *spatial, channels) or, channels-first, (batch, time, channels, *spatial)."""

    rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation="tanh", recurrent_activation="sigmoid", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", unit_forget_bias=True,
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"{cls}: filters must be a positive integer, got filters={filters!r}")
        if stateful:
            raise ValueError(f"{cls} {self.name!r}: stateful=True is not supported by graphc; pass the state "
                             "explicitly with initial_state= and return_state=True")
        for what, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"{cls}: {what} must be in [0, 1], got {rate}")
        self._set_weight_options(
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint)
        self.filters = int(filters)
        self.kernel_size = standardize_tuple(kernel_size, self.rank, "kernel_size", cls)
        self.strides = standardize_tuple(strides, self.rank, "strides", cls)
        self.dilation_rate = standardize_tuple(dilation_rate, self.rank, "dilation_rate", cls)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: strides > 1 cannot be combined with dilation_rate > 1, got "
                             f"strides={self.strides}, dilation_rate={self.dilation_rate}")
        self.padding = standardize_padding(padding, cls)
        self.data_format = check_data_format(data_format, cls)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = False
        self.unroll = bool(unroll)  # the sequence is unrolled either way
        self.zero_output_for_mask = bool(zero_output_for_mask)  # only matters with masks, which are refused

    # ------------------------------------------------------------------ checks and weights
    def _layout(self) -> str:
        spatial = SPATIAL_NAMES[self.rank]
        if self.data_format == "channels_first":
            return f"batch, time, channels, {spatial}"
        return f"batch, time, {spatial}, channels"

    def _check_sequence_shape(self, shape) -> None:
        cls = type(self).__name__
        if shape is None or len(shape) != self.rank + 3:
            raise ShapeError(f"{cls} expects an input of rank {self.rank + 3} ({self._layout()}), got shape "
                             f"{None if shape is None else tuple(shape)}")
        if shape[1] is None:
            raise ShapeError(f"{cls} needs a known number of time steps (graphc unrolls the sequence), got shape "
                             f"{tuple(shape)}")
        if any(d is None for d in shape[2:]):
            raise ShapeError(f"{cls} needs known spatial sizes and channel count ({self._layout()}), got shape "
                             f"{tuple(shape)}")

    def _channels(self, shape) -> int:
        return shape[2] if self.data_format == "channels_first" else shape[-1]

    def check_inputs(self, inputs) -> None:
        flat = nest.flatten(inputs)
        cls = type(self).__name__
        if len(flat) != 1:
            raise ShapeError(f"{cls} takes one sequence tensor (pass states with initial_state=), got {len(flat)} "
                             "tensors")
        self._check_sequence_shape(flat[0].shape)
        if not is_float(flat[0].dtype):
            raise ShapeError(f"{cls} needs a float input, got {flat[0].dtype}")
        if self.built and self._channels(flat[0].shape) != self.kernel.shape[-2]:
            raise ShapeError(f"{cls} was built for inputs with {self.kernel.shape[-2]} channels, got shape "
                             f"{tuple(flat[0].shape)}")

    def build(self, input_shape, initial_state_shape=None) -> None:
        if isinstance(input_shape, list) and len(input_shape) == 1 and isinstance(input_shape[0], tuple):
            input_shape = input_shape[0]
        try:
            self._check_sequence_shape(input_shape)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) cannot be built for input shape "
                             f"{input_shape}: {exc}") from None
        width = 4 * self.filters
        self.kernel = self.add_weight("kernel", self.kernel_size + (int(self._channels(input_shape)), width),
                                      self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", self.kernel_size + (self.filters, width),
                                                self.recurrent_initializer, regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        self.bias = self.add_weight("bias", (width,), self._bias_init(), regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None
        self.built = True

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, filters = self.bias_initializer, self.filters

        def init(shape, dtype="float32"):
            # Keras: the forget gate's bias starts at one, the others from bias_initializer.
            return np.concatenate([base((filters,), dtype=dtype), np.ones((filters,), dtype=dtype),
                                   base((2 * filters,), dtype=dtype)])

        return init

    # ------------------------------------------------------------------ lowering
    def _to_channels_last(self, ctx: LowerContext, x: str, time_axis: bool) -> str:
        if self.data_format != "channels_first":
            return x
        lead = 2 if time_axis else 1
        rank = ctx.rank(x)
        return ctx.transpose(x, perm=(*range(lead), *range(lead + 1, rank), lead))

    def _from_channels_last(self, ctx: LowerContext, y: str, time_axis: bool) -> str:
        if self.data_format != "channels_first":
            return y
        lead = 2 if time_axis else 1
        rank = ctx.rank(y)
        return ctx.transpose(y, perm=(*range(lead), rank - 1, *range(lead, rank - 1)))

    def _refuse_in_training(self, ctx: LowerContext, training) -> None:
        rates = {name: rate for name, rate in (("dropout", self.dropout), ("recurrent_dropout",
                                                                          self.recurrent_dropout)) if rate > 0}
        if rates and (ctx.training if training is None else training):
            given = ", ".join(f"{name}={rate}" for name, rate in rates.items())
            raise ValueError(f"{type(self).__name__} {self.name!r}: {given} is not supported in training by graphc "
                             "(at inference it does nothing); set it to 0 to train")

    def lower(self, ctx: LowerContext, inputs, initial_state=None, mask=None, training=None, **kwargs):
        cls = type(self).__name__
        if kwargs:
            raise TypeError(f"{cls}.call got unexpected argument(s) {sorted(kwargs)}")
        if mask is not None:
            raise ShapeError(f"{cls} does not support masks in graphc")
        self._refuse_in_training(ctx, training)
        x = self._to_channels_last(ctx, nest.flatten(inputs)[0], time_axis=True)
        states = [] if initial_state is None else nest.flatten(initial_state)
        if states and len(states) != 2:
            raise ShapeError(f"{cls} initial_state must be 2 tensors [h, c], got {len(states)}")
        h, c = (self._to_channels_last(ctx, s, time_axis=False) for s in states) if states else (None, None)
        steps = ctx.shape(x)[1]
        spatial, channels = ctx.shape(x)[2:-1], ctx.shape(x)[-1]
        # the input convolution of every step at once: (batch*time, *spatial, C) -> (batch, time, *out, 4F)
        frames = ctx.reshape(x, shape=(-1, *spatial, channels))
        z_in = ctx.conv(frames, ctx.param(self.kernel), strides=self.strides, dilations=self.dilation_rate,
                        pads=keras_pads(self.padding, spatial, self.kernel_size, self.strides, self.dilation_rate))
        if self.use_bias:
            z_in = ctx.bias_add(z_in, ctx.param(self.bias))
        out_spatial = ctx.shape(z_in)[1:-1]
        z_in = ctx.reshape(z_in, shape=(-1, steps, *out_spatial, 4 * self.filters))
        if h is not None and tuple(ctx.shape(h)[1:]) != (*out_spatial, self.filters):
            raise ShapeError(f"{cls} initial states must have the output's shape (batch, "
                             f"{', '.join(map(str, (*out_spatial, self.filters)))}) channels-last, got "
                             f"{ctx.shape(h)}")
        recurrent = ctx.param(self.recurrent_kernel)
        same = keras_pads("same", out_spatial, self.kernel_size, (1,) * self.rank)
        last = self.rank + 1
        outputs = []
        for t in (reversed(range(steps)) if self.go_backwards else range(steps)):
            z = ctx.squeeze(ctx.slice(z_in, axis=1, start=t, stop=t + 1), axis=1)
            if h is not None:
                z = ctx.add(z, ctx.conv(h, recurrent, pads=same))
            i, f, g, o = (ctx.slice(z, axis=last, start=k * self.filters, stop=(k + 1) * self.filters)
                          for k in range(4))
            i, f, o = (activations.lower(ctx, self.recurrent_activation, gate) for gate in (i, f, o))
            update = ctx.mul(i, activations.lower(ctx, self.activation, g))
            c = update if c is None else ctx.add(ctx.mul(f, c), update)
            h = ctx.mul(o, activations.lower(ctx, self.activation, c))
            outputs.append(h)
        if self.return_sequences:
            out = ctx.concat(*[ctx.expand_dims(step, axis=1) for step in outputs], axis=1)
            out = self._from_channels_last(ctx, out, time_axis=True)
        else:
            out = self._from_channels_last(ctx, h, time_axis=False)
        if self.return_state:
            state = self._from_channels_last(ctx, h, time_axis=False)
            # the last output and the state are one value: the state gets its own (model outputs are renamed)
            return [out, ctx.identity(state) if state == out else state,
                    self._from_channels_last(ctx, c, time_axis=False)]
        return out

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": self.dilation_rate, "activation": self.activation,
                "recurrent_activation": self.recurrent_activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "unit_forget_bias": self.unit_forget_bias, "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "seed": self.seed,
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "stateful": self.stateful, "unroll": self.unroll,
                "zero_output_for_mask": self.zero_output_for_mask}


class ConvLSTM1D(_ConvLSTM):
    """Convolutional LSTM over (batch, time, steps, channels)."""

    rank = 1


class ConvLSTM2D(_ConvLSTM):
    """Convolutional LSTM over (batch, time, height, width, channels)."""

    rank = 2


class ConvLSTM3D(_ConvLSTM):
    """Convolutional LSTM over (batch, time, depth, height, width, channels)."""

    rank = 3
