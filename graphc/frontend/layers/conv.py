"""Convolution layers: Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D and
Conv1D/2D/3DTranspose (Keras 3).

Constructor arguments, defaults, weight names, order, shapes and initializers are Keras's.
Every layer lowers to the ``conv`` op (explicit pads from :func:`graphc.ops.conv.keras_pads`),
or ``conv_transpose`` for the transposed layers (whose Keras kernel (*k, filters, in) is the
kernel of the convolution they are the adjoint of), then ``bias_add`` and the activation. A
depthwise kernel (*k, C, M) is reshaped to (*k, 1, C*M) and run as a conv with
``groups = C``, which gives Keras's output channel order ``c*M + m``.

The ops are channels-last. ``data_format="channels_first"`` inputs (batch, channels,
*spatial) are transposed to channels-last before the op and the result back after it; between
consecutive channels-first layers the optimizer's no-op removal composes each back-and-forth
pair of transposes into nothing.

Regularizers and constraints are honoured in training (:meth:`Layer._set_weight_options`);
LoRA is not supported: passing it raises ValueError rather than being silently ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.frontend import activations, initializers
from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import single
from graphc.frontend.lowering import LowerContext
from graphc.ir.types import is_float
from graphc.ops.conv import keras_pads, keras_transpose_pads
from graphc.ops.registry import ShapeError

__all__ = ["Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
           "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution1D",
           "Convolution2D", "Convolution3D", "SeparableConvolution1D", "SeparableConvolution2D",
           "Convolution1DTranspose", "Convolution2DTranspose", "Convolution3DTranspose"]

SPATIAL_NAMES = {1: "steps", 2: "height, width", 3: "depth, height, width"}


# ---------------------------------------------------------------------------- argument checks
def standardize_tuple(value: Any, n: int, name: str, layer: str, allow_zero: bool = False) -> tuple[int, ...]:
    """An int or n ints as a tuple of n positive (or, with ``allow_zero``, non-negative) ints
    (Keras's ``standardize_tuple``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in items):
        raise ValueError(f"{layer}: the `{name}` argument must be an integer or a tuple of {n} "
                         f"integers, got {name}={value!r}")
    if any(v < 0 or (v == 0 and not allow_zero) for v in items):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{layer}: the `{name}` argument must be {kind}, got {name}={value!r}")
    return tuple(int(v) for v in items)


def standardize_padding(value: Any, layer: str, allow_causal: bool = False) -> str:
    allowed = ("valid", "same", "causal") if allow_causal else ("valid", "same")
    padding = value.lower() if isinstance(value, str) else value
    if padding not in allowed:
        raise ValueError(f"{layer}: padding must be one of {allowed}, got padding={value!r}")
    return padding


def check_data_format(value: Any, layer: str) -> str:
    """Keras's ``data_format`` (None: channels_last, Keras's default image data format)."""
    if value is None:
        return "channels_last"
    data_format = value.lower() if isinstance(value, str) else value
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"{layer}: data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return data_format


def channel_axis(data_format: str) -> int:
    return 1 if data_format == "channels_first" else -1


def to_channels_last(ctx: LowerContext, x: str, data_format: str) -> str:
    """(N, C, *spatial) -> (N, *spatial, C) for channels-first layers; ``x`` itself otherwise."""
    if data_format != "channels_first":
        return x
    rank = ctx.rank(x)
    return ctx.transpose(x, perm=(0, *range(2, rank), 1))


def from_channels_last(ctx: LowerContext, y: str, data_format: str) -> str:
    """(N, *spatial, C) -> (N, C, *spatial) for channels-first layers; ``y`` itself otherwise."""
    if data_format != "channels_first":
        return y
    rank = ctx.rank(y)
    return ctx.transpose(y, perm=(0, rank - 1, *range(1, rank - 1)))


def refuse_unsupported(layer: str, **options: Any) -> None:
    """Raise for Keras options graphc does not implement (LoRA)."""
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise ValueError(f"{layer}: graphc does not support {', '.join(given)}; leave them None")


def layout_names(rank: int, data_format: str = "channels_last") -> str:
    """The axes of a ``rank``-d spatial input, e.g. 'batch, height, width, channels'."""
    if data_format == "channels_first":
        return f"batch, channels, {SPATIAL_NAMES[rank]}"
    return f"batch, {SPATIAL_NAMES[rank]}, channels"


def check_spatial_input(x, rank: int, layer: str, data_format: str = "channels_last") -> None:
    """A float (or any, for pooling) input of rank ``rank + 2`` with a known channel count."""
    if len(x.shape) != rank + 2:
        raise ShapeError(f"{layer} expects an input of rank {rank + 2} ({layout_names(rank, data_format)}), "
                         f"got shape {x.shape}")
    axis = channel_axis(data_format)
    if x.shape[axis] is None:
        where = "axis 1, data_format='channels_first'" if axis == 1 else "last axis"
        raise ShapeError(f"{layer} needs a known channel count ({where}), got shape {x.shape}")


# ---------------------------------------------------------------------------- base
# Activations that work along the last axis rather than elementwise: with channels_first that axis is
# a spatial one, so they apply after the output is back in the layer's layout.
_ALONG_LAST_AXIS = frozenset({"softmax", "log_softmax", "sparsemax", "glu"})


class _BaseConv(Layer):
    """What every convolution layer shares: geometry, padding, bias and activation."""

    rank = 2

    def _init_geometry(self, kernel_size, strides, padding, data_format, dilation_rate, activation,
                       use_bias, bias_initializer) -> None:
        cls = type(self).__name__
        self.kernel_size = standardize_tuple(kernel_size, self.rank, "kernel_size", cls)
        self.strides = standardize_tuple(strides, self.rank, "strides", cls)
        self.dilation_rate = standardize_tuple(dilation_rate, self.rank, "dilation_rate", cls)
        self.padding = standardize_padding(padding, cls, allow_causal=self._allow_causal())
        self.data_format = check_data_format(data_format, cls)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = initializers.get(bias_initializer)

    def _allow_causal(self) -> bool:
        return False

    def _in_channels(self) -> int | None:
        return None

    def _channels(self, shape) -> int | None:
        """The channel count of an input ``shape`` in this layer's data format."""
        return shape[channel_axis(self.data_format)]

    def check_inputs(self, inputs) -> None:
        cls = type(self).__name__
        x = single(inputs)
        check_spatial_input(x, self.rank, cls, self.data_format)
        if not is_float(x.dtype):
            raise ShapeError(f"{cls} needs a float input, got {x.dtype}")
        built = self._in_channels()
        if built is not None and self._channels(x.shape) != built:
            raise ShapeError(f"{cls} was built for inputs with {built} channels, got shape {x.shape}")

    def _pads(self, ctx: LowerContext, x: str):
        """Keras's padding for channels-last ``x``."""
        return keras_pads(self.padding, ctx.shape(x)[1:-1], self.kernel_size, self.strides,
                          self.dilation_rate)

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = to_channels_last(ctx, single(inputs), self.data_format)
        y = self._lower_channels_last(ctx, x)
        if self.use_bias:
            y = ctx.bias_add(y, ctx.param(self.bias))
        if self.activation in _ALONG_LAST_AXIS:  # Keras applies these to the last axis of the layer's own layout
            return activations.lower(ctx, self.activation, from_channels_last(ctx, y, self.data_format))
        y = activations.lower(ctx, self.activation, y)
        return from_channels_last(ctx, y, self.data_format)

    def _lower_channels_last(self, ctx: LowerContext, x: str) -> str:
        """The convolution of channels-last ``x``, before bias and activation."""
        raise NotImplementedError

    def _geometry_config(self) -> dict:
        return {"kernel_size": self.kernel_size, "strides": self.strides, "padding": self.padding,
                "data_format": self.data_format, "dilation_rate": self.dilation_rate}


# ---------------------------------------------------------------------------- Conv
class _Conv(_BaseConv):
    """``activation(conv(inputs, kernel) + bias)``; kernel (*kernel_size, C/groups, filters)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None,
                 lora_alpha=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        refuse_unsupported(cls, lora_rank=lora_rank, lora_alpha=lora_alpha)
        self._set_weight_options(kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                                 activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                                 bias_constraint=bias_constraint)
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"{cls}: filters must be a positive integer, got filters={filters!r}")
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups <= 0:
            raise ValueError(f"{cls}: groups must be a positive integer, got groups={groups!r}")
        if filters % groups:
            raise ValueError(f"{cls}: filters must be divisible by groups, got filters={filters}, "
                             f"groups={groups}")
        self.filters = int(filters)
        self.groups = int(groups)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate, activation,
                            use_bias, bias_initializer)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: strides > 1 cannot be combined with dilation_rate > 1, got "
                             f"strides={self.strides}, dilation_rate={self.dilation_rate}")
        self.kernel_initializer = initializers.get(kernel_initializer)

    def _allow_causal(self) -> bool:
        return self.rank == 1

    def _in_channels(self) -> int | None:
        return self.kernel.shape[-2] * self.groups if self.built else None

    def check_inputs(self, inputs) -> None:
        super().check_inputs(inputs)
        x = single(inputs)
        channels = self._channels(x.shape)
        if channels % self.groups:
            raise ShapeError(f"{type(self).__name__}: the input channels ({channels}) must be divisible "
                             f"by groups={self.groups}; input shape {x.shape}")

    def build(self, input_shape) -> None:
        channels = self._channels(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels // self.groups, self.filters),
                                      self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def _lower_channels_last(self, ctx: LowerContext, x: str) -> str:
        return ctx.conv(x, ctx.param(self.kernel), strides=self.strides, dilations=self.dilation_rate,
                        pads=self._pads(ctx, x), groups=self.groups)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, **self._geometry_config(),
                "groups": self.groups, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class Conv1D(_Conv):
    """1-D convolution over (batch, steps, channels); padding may also be 'causal'."""

    rank = 1


class Conv2D(_Conv):
    """2-D convolution over (batch, height, width, channels)."""

    rank = 2


class Conv3D(_Conv):
    """3-D convolution over (batch, depth, height, width, channels)."""

    rank = 3


# ---------------------------------------------------------------------------- Depthwise
def _lower_depthwise(layer: _BaseConv, ctx: LowerContext, x: str, kernel) -> str:
    """Keras's depthwise conv: kernel (*k, C, M) as a (*k, 1, C*M) kernel with groups = C."""
    channels, multiplier = kernel.shape[-2], kernel.shape[-1]
    w = ctx.reshape(ctx.param(kernel), shape=layer.kernel_size + (1, channels * multiplier))
    return ctx.conv(x, w, strides=layer.strides, dilations=layer.dilation_rate, pads=layer._pads(ctx, x),
                    groups=channels)


def _check_multiplier(depth_multiplier, cls: str) -> int:
    if (not isinstance(depth_multiplier, (int, np.integer)) or isinstance(depth_multiplier, bool)
            or depth_multiplier <= 0):
        raise ValueError(f"{cls}: depth_multiplier must be a positive integer, got "
                         f"depth_multiplier={depth_multiplier!r}")
    return int(depth_multiplier)


class _DepthwiseConv(_BaseConv):
    """Each input channel convolved with its own ``depth_multiplier`` filters; kernel (*k, C, M)."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self._set_weight_options(depthwise_regularizer=depthwise_regularizer, bias_regularizer=bias_regularizer,
                                 activity_regularizer=activity_regularizer, depthwise_constraint=depthwise_constraint,
                                 bias_constraint=bias_constraint)
        self.depth_multiplier = _check_multiplier(depth_multiplier, cls)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate, activation,
                            use_bias, bias_initializer)
        self.depthwise_initializer = initializers.get(depthwise_initializer)

    def _in_channels(self) -> int | None:
        return self.kernel.shape[-2] if self.built else None

    @property
    def depthwise_kernel(self):
        """The depthwise kernel (Keras 3 names this weight ``kernel``)."""
        return self.kernel

    def build(self, input_shape) -> None:
        channels = self._channels(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels, self.depth_multiplier),
                                      self.depthwise_initializer, regularizer=self.depthwise_regularizer,
                                      constraint=self.depthwise_constraint)
        self.bias = (self.add_weight("bias", (channels * self.depth_multiplier,), self.bias_initializer,
                                     regularizer=self.bias_regularizer, constraint=self.bias_constraint)
                     if self.use_bias else None)

    def _lower_channels_last(self, ctx: LowerContext, x: str) -> str:
        return _lower_depthwise(self, ctx, x, self.kernel)

    def get_config(self) -> dict:
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                **self._geometry_config(), "activation": self.activation, "use_bias": self.use_bias,
                "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class DepthwiseConv1D(_DepthwiseConv):
    """Depthwise 1-D convolution over (batch, steps, channels)."""

    rank = 1


class DepthwiseConv2D(_DepthwiseConv):
    """Depthwise 2-D convolution over (batch, height, width, channels)."""

    rank = 2


# ---------------------------------------------------------------------------- Separable
class _SeparableConv(_BaseConv):
    """A depthwise conv (*k, C, M) followed by a pointwise conv (1.., C*M, filters), then bias."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self._set_weight_options(depthwise_regularizer=depthwise_regularizer,
                                 pointwise_regularizer=pointwise_regularizer, bias_regularizer=bias_regularizer,
                                 activity_regularizer=activity_regularizer, depthwise_constraint=depthwise_constraint,
                                 pointwise_constraint=pointwise_constraint, bias_constraint=bias_constraint)
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"{cls}: filters must be a positive integer, got filters={filters!r}")
        self.filters = int(filters)
        self.depth_multiplier = _check_multiplier(depth_multiplier, cls)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate, activation,
                            use_bias, bias_initializer)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)

    def _in_channels(self) -> int | None:
        return self.depthwise_kernel.shape[-2] if self.built else None

    def build(self, input_shape) -> None:
        channels = self._channels(input_shape)
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel", self.kernel_size + (channels, self.depth_multiplier), self.depthwise_initializer,
            regularizer=self.depthwise_regularizer, constraint=self.depthwise_constraint)
        self.pointwise_kernel = self.add_weight(
            "pointwise_kernel", (1,) * self.rank + (channels * self.depth_multiplier, self.filters),
            self.pointwise_initializer, regularizer=self.pointwise_regularizer, constraint=self.pointwise_constraint)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def _lower_channels_last(self, ctx: LowerContext, x: str) -> str:
        y = _lower_depthwise(self, ctx, x, self.depthwise_kernel)
        return ctx.conv(y, ctx.param(self.pointwise_kernel))

    def get_config(self) -> dict:
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier, "filters": self.filters,
                **self._geometry_config(), "activation": self.activation, "use_bias": self.use_bias,
                "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
                "pointwise_initializer": initializers.serialize(self.pointwise_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class SeparableConv1D(_SeparableConv):
    """Depthwise separable 1-D convolution over (batch, steps, channels)."""

    rank = 1


class SeparableConv2D(_SeparableConv):
    """Depthwise separable 2-D convolution over (batch, height, width, channels)."""

    rank = 2


# ---------------------------------------------------------------------------- Transposed
class _ConvTranspose(_BaseConv):
    """The adjoint of a convolution: upsamples by ``strides``; kernel (*kernel_size, filters, C).

    The output size per spatial axis is Keras's: 'valid' ``(n-1)*s + max(k_eff, s)``, 'same'
    ``n*s``; with ``output_padding`` p, ``(n-1)*s + k_eff + p`` ('valid') or
    ``(n-1)*s + k_eff % 2 + p`` ('same'), where ``k_eff = (k-1)*dilation + 1``.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self._set_weight_options(kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                                 activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                                 bias_constraint=bias_constraint)
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"{cls}: filters must be a positive integer, got filters={filters!r}")
        self.filters = int(filters)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate, activation,
                            use_bias, bias_initializer)
        self.output_padding = (None if output_padding is None else
                               standardize_tuple(output_padding, self.rank, "output_padding", cls, allow_zero=True))
        if self.output_padding is not None:
            for axis, (extra, stride) in enumerate(zip(self.output_padding, self.strides)):
                if extra >= stride:
                    raise ValueError(f"{cls}: output_padding must be smaller than strides on every axis; axis "
                                     f"{axis} has output_padding={self.output_padding}, strides={self.strides}")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: strides > 1 cannot be combined with dilation_rate > 1, got "
                             f"strides={self.strides}, dilation_rate={self.dilation_rate}")
        self.kernel_initializer = initializers.get(kernel_initializer)

    def _in_channels(self) -> int | None:
        return self.kernel.shape[-1] if self.built else None

    def build(self, input_shape) -> None:
        channels = self._channels(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (self.filters, channels), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def _lower_channels_last(self, ctx: LowerContext, x: str) -> str:
        pads, extra = keras_transpose_pads(self.padding, self.kernel_size, self.strides, self.dilation_rate,
                                           self.output_padding)
        return ctx.conv_transpose(x, ctx.param(self.kernel), strides=self.strides, dilations=self.dilation_rate,
                                  pads=pads, output_padding=extra)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "output_padding": self.output_padding,
                "data_format": self.data_format, "dilation_rate": self.dilation_rate, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class Conv1DTranspose(_ConvTranspose):
    """Transposed 1-D convolution over (batch, steps, channels)."""

    rank = 1


class Conv2DTranspose(_ConvTranspose):
    """Transposed 2-D convolution over (batch, height, width, channels)."""

    rank = 2


class Conv3DTranspose(_ConvTranspose):
    """Transposed 3-D convolution over (batch, depth, height, width, channels)."""

    rank = 3


# Keras's aliases.
Convolution1D = Conv1D
Convolution2D = Conv2D
Convolution3D = Conv3D
SeparableConvolution1D = SeparableConv1D
SeparableConvolution2D = SeparableConv2D
Convolution1DTranspose = Conv1DTranspose
Convolution2DTranspose = Conv2DTranspose
Convolution3DTranspose = Conv3DTranspose
