"""Pooling layers: Max/AveragePooling1D/2D/3D and their Global forms (Keras 3).

Window pooling lowers to the ``max_pool``/``avg_pool`` ops with explicit pads from Keras's
'valid'/'same' rule (average pooling leaves padding out of the count); global pooling
lowers to ``reduce_max``/``reduce_mean`` over the spatial axes. The window ops are
channels-last: ``data_format="channels_first"`` inputs are transposed around them, as for
the convolutions; global pooling reduces the spatial axes of either layout in place.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import masking
from graphc.frontend.layer import Layer
from graphc.frontend.layers.conv import (
    check_data_format,
    check_spatial_input,
    from_channels_last,
    layout_names,
    standardize_padding,
    standardize_tuple,
    to_channels_last,
)
from graphc.frontend.layers.core import single
from graphc.frontend.lowering import LowerContext
from graphc.ir.types import is_float
from graphc.ops.common import fmt_shape
from graphc.ops.conv import keras_pads
from graphc.ops.registry import ShapeError

__all__ = ["MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
           "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
           "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
           "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
           "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalAvgPool1D", "GlobalAvgPool2D",
           "GlobalAvgPool3D"]


class _Pooling(Layer):
    """A window (``pool_size``) slid by ``strides`` (default: ``pool_size``) over the spatial axes."""

    rank = 2
    op = "max_pool"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        cls = type(self).__name__
        self.pool_size = standardize_tuple(pool_size, self.rank, "pool_size", cls)
        self.strides = self.pool_size if strides is None else standardize_tuple(strides, self.rank,
                                                                                 "strides", cls)
        self.padding = standardize_padding(padding, cls)
        self.data_format = check_data_format(data_format, cls)

    def check_inputs(self, inputs) -> None:
        cls = type(self).__name__
        x = single(inputs)
        check_spatial_input(x, self.rank, cls, self.data_format)
        if self.op == "avg_pool" and not is_float(x.dtype):
            raise ShapeError(f"{cls} needs a float input, got {x.dtype}")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = to_channels_last(ctx, single(inputs), self.data_format)
        pads = keras_pads(self.padding, ctx.shape(x)[1:-1], self.pool_size, self.strides)
        y = ctx.emit(self.op, x, kernel=self.pool_size, strides=self.strides, pads=pads)
        return from_channels_last(ctx, y, self.data_format)

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": self.pool_size, "padding": self.padding,
                "strides": self.strides, "data_format": self.data_format}


class MaxPooling1D(_Pooling):
    """Window maximum over (batch, steps, channels)."""

    rank, op = 1, "max_pool"

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class MaxPooling2D(_Pooling):
    """Window maximum over (batch, height, width, channels)."""

    rank, op = 2, "max_pool"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class MaxPooling3D(_Pooling):
    """Window maximum over (batch, depth, height, width, channels)."""

    rank, op = 3, "max_pool"

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)


class AveragePooling1D(_Pooling):
    """Window mean over (batch, steps, channels); 'same' padding is left out of the count."""

    rank, op = 1, "avg_pool"


class AveragePooling2D(_Pooling):
    """Window mean over (batch, height, width, channels); 'same' padding is left out of the count."""

    rank, op = 2, "avg_pool"


class AveragePooling3D(_Pooling):
    """Window mean over (batch, depth, height, width, channels); padding is left out of the count."""

    rank, op = 3, "avg_pool"


class _GlobalPooling(Layer):
    """Max or mean over every spatial axis: (batch, *spatial, C) -> (batch, C); ``keepdims`` keeps the
    spatial axes as ones. Channels-first inputs (batch, C, *spatial) reduce their last axes."""

    rank = 2
    op = "reduce_max"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_data_format(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)

    def check_inputs(self, inputs) -> None:
        cls = type(self).__name__
        x = single(inputs)
        if len(x.shape) != self.rank + 2:
            raise ShapeError(f"{cls} expects an input of rank {self.rank + 2} "
                             f"({layout_names(self.rank, self.data_format)}), got shape {x.shape}")
        if self.op == "reduce_mean" and not is_float(x.dtype):
            raise ShapeError(f"{cls} needs a float input, got {x.dtype}")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = single(inputs)
        first = 2 if self.data_format == "channels_first" else 1
        return ctx.emit(self.op, x, axes=tuple(range(first, first + self.rank)), keepdims=self.keepdims)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalMaxPooling1D(_GlobalPooling):
    """Maximum over the 1 spatial axis."""

    rank, op = 1, "reduce_max"


class GlobalMaxPooling2D(_GlobalPooling):
    """Maximum over the 2 spatial axes."""

    rank, op = 2, "reduce_max"


class GlobalMaxPooling3D(_GlobalPooling):
    """Maximum over the 3 spatial axes."""

    rank, op = 3, "reduce_max"


class GlobalAveragePooling1D(_GlobalPooling):
    """Mean over the 1 spatial axis; with a mask, the mean over the kept steps (Keras's masked
    mean: a fully masked sample divides zero by zero). The output has no mask."""

    rank, op = 1, "reduce_mean"

    def lower(self, ctx: LowerContext, inputs, mask=None, **kwargs):
        if mask is None:
            return super().lower(ctx, inputs, **kwargs)
        x = single(inputs)
        steps, features = (2, 1) if self.data_format == "channels_first" else (1, 2)
        if ctx.rank(mask) != 2:
            raise ShapeError(f"GlobalAveragePooling1D: the mask must have shape (batch, steps), got "
                             f"{fmt_shape(ctx.shape(mask))} for an input of shape {fmt_shape(ctx.shape(x))}")
        kept = ctx.expand_dims(masking.as_bool(ctx, mask), axis=features)
        total = ctx.reduce_sum(ctx.where(kept, x, ctx.constant(np.zeros((), dtype=ctx.dtype(x)), "zero")),
                               axes=(steps,), keepdims=self.keepdims)
        count = ctx.reduce_sum(ctx.cast(kept, dtype=ctx.dtype(x)), axes=(steps,), keepdims=self.keepdims)
        return ctx.div(total, count)

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        return None


class GlobalAveragePooling2D(_GlobalPooling):
    """Mean over the 2 spatial axes."""

    rank, op = 2, "reduce_mean"


class GlobalAveragePooling3D(_GlobalPooling):
    """Mean over the 3 spatial axes."""

    rank, op = 3, "reduce_mean"


# Keras's aliases.
MaxPool1D, MaxPool2D, MaxPool3D = MaxPooling1D, MaxPooling2D, MaxPooling3D
AvgPool1D, AvgPool2D, AvgPool3D = AveragePooling1D, AveragePooling2D, AveragePooling3D
GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D = GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D
GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D = (GlobalAveragePooling1D, GlobalAveragePooling2D,
                                                     GlobalAveragePooling3D)
