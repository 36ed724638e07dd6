"""Regularization layers: SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout, AlphaDropout
and ActivityRegularization (Keras 3).

Each is the identity at inference. In a training graph each draws its noise with the
counter-based random ops (``random_uniform_like`` for masks, ``random_normal_like`` for
Gaussian noise), so every backend draws new values at every step, and applies Keras's formula:

- SpatialDropout: one keep/drop decision per (sample, channel), shared by every spatial
  position; kept values are divided by ``1 - rate`` (Keras's ``backend.random.dropout`` with
  ``noise_shape = (batch, 1.., channels)``);
- GaussianNoise: ``x + stddev * N(0, 1)``; GaussianDropout: ``x * (1 + sqrt(rate / (1 - rate)) * N(0, 1))``;
- AlphaDropout: dropped values become SELU's negative saturation ``-alpha * scale``, then
  ``a * x + b`` restores the mean and variance (``a = ((1 - rate)(1 + rate alpha'^2))^-1/2``,
  ``b = -a alpha' rate``), with Keras's ``noise_shape``;
- ActivityRegularization: the identity, with an ``L1L2(l1, l2)`` activity regularizer (its
  penalty joins the training loss, as every layer's ``activity_regularizer`` does).
"""

from __future__ import annotations

import math

import numpy as np

from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import Dropout, single
from graphc.frontend.lowering import LowerContext
from graphc.frontend.regularizers import L1L2
from graphc.ops.registry import ShapeError

__all__ = ["SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
           "AlphaDropout", "ActivityRegularization"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _training(ctx: LowerContext, training) -> bool:
    return bool(ctx.training if training is None else training)


def _check_rate(layer: str, rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not 0 <= rate <= 1:
        raise ValueError(f"Invalid value received for argument `rate` of {layer}. Expected a float value between "
                         f"0 and 1. Received: rate={rate}")
    return float(rate)


def _scalar(ctx: LowerContext, value: float, like: str, name: str) -> str:
    return ctx.constant(np.asarray(value, dtype=ctx.dtype(like)), name)


def _noise_shaped(ctx: LowerContext, x: str, shared_axes) -> str:
    """A view of ``x`` with size 1 on ``shared_axes``: a mask of its shape broadcasts over them."""
    for axis in shared_axes:
        if ctx.shape(x)[axis] != 1:
            x = ctx.slice(x, axis=axis, start=0, stop=1)
    return x


def _keep_mask(ctx: LowerContext, x: str, shared_axes, rate: float, seed) -> str:
    """True with probability ``1 - rate``, one draw per position outside ``shared_axes``."""
    uniform = ctx.random_uniform_like(_noise_shaped(ctx, x, shared_axes), seed=seed)
    return ctx.greater_equal(uniform, _scalar(ctx, rate, uniform, "rate"))


def _check_float(layer: str, x) -> None:
    if not x.dtype.startswith("float"):
        raise ShapeError(f"{layer} needs a float input, got {x.dtype}")


# ---------------------------------------------------------------------------- SpatialDropout
class _SpatialDropout(Dropout):
    """Drops whole channels: the mask has the shape (batch, 1, ..., 1, channels)."""

    rank = 1
    supports_masking = True

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        cls = type(self).__name__
        super().__init__(_check_rate(cls, rate), seed=seed, **kwargs)
        if data_format is None:
            data_format = "channels_last"
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"{cls}: data_format must be 'channels_last' or 'channels_first', got "
                             f"data_format={data_format!r}")
        self.data_format = data_format

    def check_inputs(self, inputs):
        x = single(inputs)
        if len(x.shape) != self.rank + 2:
            layout = ("batch, channels, *spatial" if self.data_format == "channels_first"
                      else "batch, *spatial, channels")
            raise ShapeError(f"{type(self).__name__} expects an input of rank {self.rank + 2} ({layout}), got "
                             f"shape {x.shape}")
        _check_float(type(self).__name__, x)

    def _spatial_axes(self) -> tuple[int, ...]:
        first = 2 if self.data_format == "channels_first" else 1
        return tuple(range(first, first + self.rank))

    def lower(self, ctx, inputs, training=None, **kwargs):
        x = single(inputs)
        if not _training(ctx, training) or self.rate == 0:
            return ctx.dropout(x, rate=self.rate, seed=self.seed)
        zero = _scalar(ctx, 0.0, x, "zero")
        if self.rate == 1:  # Keras: everything dropped
            return ctx.mul(x, zero)
        keep = _keep_mask(ctx, x, self._spatial_axes(), self.rate, self.seed)
        kept = ctx.div(x, _scalar(ctx, 1.0 - self.rate, x, "keep_prob"))
        return ctx.where(keep, kept, zero)

    def get_config(self):
        # Keras's SpatialDropout configs hold exactly these keys (its constructors take no others).
        config = {"rate": self.rate, "seed": self.seed, "name": self.name, "dtype": self.dtype}
        if self.rank > 1:
            config["data_format"] = self.data_format
        return config


class SpatialDropout1D(_SpatialDropout):
    """Dropout of whole feature maps of a (batch, steps, channels) sequence."""

    rank = 1

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)


class SpatialDropout2D(_SpatialDropout):
    """Dropout of whole feature maps of (batch, height, width, channels) images (or channels first)."""

    rank = 2


class SpatialDropout3D(_SpatialDropout):
    """Dropout of whole feature maps of (batch, depth, height, width, channels) volumes (or channels first)."""

    rank = 3


# ---------------------------------------------------------------------------- Gaussian noise
class GaussianNoise(Layer):
    """Adds zero-centred Gaussian noise of standard deviation ``stddev`` while training."""

    supports_masking = True

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float, np.integer, np.floating)) \
                or not 0 <= stddev <= 1:
            raise ValueError("Invalid value received for argument `stddev` of GaussianNoise. Expected a float value "
                             f"between 0 and 1. Received: stddev={stddev}")
        self.stddev = float(stddev)
        self.seed = seed

    def check_inputs(self, inputs):
        _check_float("GaussianNoise", single(inputs))

    def lower(self, ctx, inputs, training=None, **kwargs):
        x = single(inputs)
        if not _training(ctx, training) or self.stddev == 0:
            return ctx.identity(x)
        noise = ctx.mul(ctx.random_normal_like(x, seed=self.seed), _scalar(ctx, self.stddev, x, "stddev"))
        return ctx.add(x, noise)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class GaussianDropout(Layer):
    """Multiplies by Gaussian noise of mean 1 and standard deviation ``sqrt(rate / (1 - rate))`` while training."""

    supports_masking = True

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate("GaussianDropout", rate)
        self.seed = seed

    def check_inputs(self, inputs):
        _check_float("GaussianDropout", single(inputs))

    def lower(self, ctx, inputs, training=None, **kwargs):
        x = single(inputs)
        if not _training(ctx, training) or self.rate == 0:
            return ctx.identity(x)
        if self.rate == 1:
            raise ValueError(f"GaussianDropout {self.name!r}: rate=1 gives noise of infinite standard deviation")
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        noise = ctx.add(ctx.mul(ctx.random_normal_like(x, seed=self.seed), _scalar(ctx, stddev, x, "stddev")),
                        _scalar(ctx, 1.0, x, "one"))
        return ctx.mul(x, noise)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


# ---------------------------------------------------------------------------- AlphaDropout
class AlphaDropout(Layer):
    """Dropout that keeps the mean and variance of SELU activations (self-normalizing networks)."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate("AlphaDropout", rate)
        self.noise_shape = None if noise_shape is None else tuple(None if d is None else int(d) for d in noise_shape)
        self.seed = seed

    def _shared_axes(self, shape) -> tuple[int, ...]:
        """The axes the mask is shared along (noise_shape 1 where the input is larger)."""
        if self.noise_shape is None:
            return ()
        if len(self.noise_shape) != len(shape):
            raise ShapeError(f"AlphaDropout noise_shape {self.noise_shape} must have one entry per input axis; input "
                             f"shape {tuple(shape)}")
        shared = []
        for axis, (want, have) in enumerate(zip(self.noise_shape, shape)):
            if want is None or want == have:
                continue
            if want != 1:
                raise ShapeError(f"AlphaDropout noise_shape {self.noise_shape} does not broadcast to the input shape "
                                 f"{tuple(shape)} (axis {axis})")
            shared.append(axis)
        return tuple(shared)

    def check_inputs(self, inputs):
        x = single(inputs)
        _check_float("AlphaDropout", x)
        self._shared_axes(x.shape)

    def lower(self, ctx, inputs, training=None, **kwargs):
        x = single(inputs)
        if not _training(ctx, training) or self.rate == 0:
            return ctx.identity(x)
        if self.rate == 1:
            raise ValueError(f"AlphaDropout {self.name!r}: rate=1 drops every unit, which leaves its scale undefined")
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - self.rate) * (1 + self.rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * self.rate
        keep = _keep_mask(ctx, x, self._shared_axes(ctx.shape(x)), self.rate, self.seed)
        kept_or_saturated = ctx.where(keep, x, _scalar(ctx, alpha_p, x, "alpha_p"))
        return ctx.add(ctx.mul(kept_or_saturated, _scalar(ctx, a, x, "a")), _scalar(ctx, b, x, "b"))

    def get_config(self):
        noise_shape = None if self.noise_shape is None else list(self.noise_shape)
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": noise_shape}


# ---------------------------------------------------------------------------- ActivityRegularization
class ActivityRegularization(Layer):
    """The identity, whose output's ``l1 * sum|x| + l2 * sum x^2`` (per sample) joins the training loss."""

    supports_masking = True

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        super().__init__(activity_regularizer=L1L2(l1=l1, l2=l2), **kwargs)
        self.l1 = l1
        self.l2 = l2

    def lower(self, ctx, inputs, **kwargs):
        return ctx.identity(single(inputs))

    def get_config(self):
        config = super().get_config()
        config.pop("activity_regularizer", None)
        return {**config, "l1": self.l1, "l2": self.l2}
