"""Activation layers: ReLU, LeakyReLU, PReLU, ELU and Softmax.

Constructor arguments, defaults, checks, weights and configs are Keras 3's. The elementwise
ones lower to one op of ``graphc.ops.elementwise.UNARY`` (``relu`` with its attributes,
``elu``), which the optimizer fuses into the product before it; PReLU composes Keras's
``relu(x) - alpha * relu(-x)`` (as ``relu(x) + alpha * min(x, 0)``, equal in floating point);
Softmax uses the ``softmax`` op over one axis and Keras's ``exp(x - logsumexp(x))`` over
several, and with a ``mask`` gives masked positions Keras's large negative logit before
the softmax and a zero after it. Like Keras's, these layers pass their input's mask on (and
Softmax, like every layer whose ``call`` takes ``mask``, receives it when none is given).
"""

from __future__ import annotations

import warnings

import numpy as np

from graphc.frontend import activations, initializers
from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import axis_argument, single
from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import axes_of
from graphc.ops.registry import ShapeError

__all__ = ["ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"]


def _number(layer: str, what: str, value, *, allow_none: bool = False) -> float | None:
    """A float >= 0 (Keras's rule for these layers' arguments), or None where allowed."""
    if value is None and allow_none:
        return None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value < 0:
        raise ValueError(f"{what} of a {layer} layer cannot be None or a negative value, got {what}={value!r}")
    return value


class ReLU(Layer):
    """``max_value`` above it, x above ``threshold``, ``negative_slope * (x - threshold)`` below."""

    supports_masking = True

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_value = _number("ReLU", "max_value", max_value, allow_none=True)
        self.negative_slope = _number("ReLU", "negative_slope", negative_slope)
        self.threshold = _number("ReLU", "threshold", threshold)

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return activations.lower(ctx, "relu", single(inputs), negative_slope=self.negative_slope,
                                 max_value=self.max_value, threshold=self.threshold)

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


class LeakyReLU(Layer):
    """x for x >= 0, ``negative_slope * x`` below (``alpha`` is Keras's deprecated name)."""

    supports_masking = True

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
            warnings.warn("Argument `alpha` is deprecated. Use `negative_slope` instead.", stacklevel=2)
        super().__init__(**kwargs)
        self.negative_slope = _number("LeakyReLU", "negative_slope", negative_slope)

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return activations.lower(ctx, "leaky_relu", single(inputs), negative_slope=self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(Layer):
    """x for x > 0, ``alpha * (exp(x) - 1)`` below."""

    supports_masking = True

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return activations.lower(ctx, "elu", single(inputs), alpha=self.alpha)

    def get_config(self):
        # Keras's ELU leaves alpha out of its config (a Keras file always means alpha=1); graphc
        # writes it, and Keras's constructor takes it back.
        return {**super().get_config(), "alpha": self.alpha}


class PReLU(Layer):
    """x for x >= 0, ``alpha * x`` below, with a learned ``alpha`` per element (shared along ``shared_axes``)."""

    supports_masking = True

    def __init__(self, alpha_initializer="Zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kwargs):
        super().__init__(**kwargs)
        self._set_weight_options(alpha_regularizer=alpha_regularizer, alpha_constraint=alpha_constraint)
        self.alpha_initializer = initializers.get(alpha_initializer)
        if shared_axes is None:
            self.shared_axes = None
        else:
            axes = list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
            if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
                raise TypeError(f"PReLU shared_axes must be an int or a list of ints, got {shared_axes!r}")
            self.shared_axes = [int(a) for a in axes]
        self.alpha = None

    def _param_shape(self, shape) -> tuple[int, ...]:
        rank = len(shape)
        shared = self.shared_axes or []
        for a in shared:
            if not 1 <= a < rank:
                raise ShapeError(f"shared_axes {self.shared_axes} must name non-batch axes 1..{rank - 1} of "
                                 f"the input shape {tuple(shape)} (Keras counts them from the batch axis, 0)")
        out = []
        for i, d in enumerate(shape[1:], start=1):
            if i in shared:
                out.append(1)
            elif d is None:
                raise ShapeError(f"axis {i} of the input shape {tuple(shape)} must be known (or shared) to "
                                 "size alpha")
            else:
                out.append(int(d))
        return tuple(out)

    def check_inputs(self, inputs):
        shape = single(inputs).shape
        if len(shape) < 2:
            raise ShapeError(f"PReLU needs an input of rank >= 2, got shape {tuple(shape)}")
        want = self._param_shape(shape)
        if self.alpha is not None and len(self.alpha.shape) != len(want):
            raise ShapeError(f"PReLU was built for inputs of rank {len(self.alpha.shape) + 1}, got shape "
                             f"{tuple(shape)}")

    def build(self, input_shape):
        self.alpha = self.add_weight("alpha", self._param_shape(input_shape), self.alpha_initializer,
                                     regularizer=self.alpha_regularizer, constraint=self.alpha_constraint)

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = single(inputs)
        alpha = ctx.param(self.alpha)
        if ctx.dtype(x) != self.alpha.dtype:
            alpha = ctx.cast(alpha, dtype=ctx.dtype(x))
        zero = ctx.constant(np.zeros((), dtype=ctx.dtype(x)), "zero")
        return ctx.add(ctx.relu(x), ctx.mul(alpha, ctx.minimum(x, zero)))

    def get_config(self):
        return {**super().get_config(), "alpha_initializer": initializers.serialize(self.alpha_initializer),
                "shared_axes": self.shared_axes}


def _large_negative(dtype: str) -> float:
    """The logit Keras gives masked positions."""
    return -3e4 if dtype == "float16" else -1e9


class Softmax(Layer):
    """Softmax over ``axis`` (an int or a list of ints); ``mask`` (broadcastable to the input) zeroes positions."""

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis_argument(axis, "Softmax")

    def _axes(self, rank: int) -> tuple[int, ...]:
        return axes_of(self.axis, rank, "Softmax")

    def check_inputs(self, inputs):
        self._axes(len(single(inputs).shape))

    def _mask(self, ctx: LowerContext, x: str, mask: str) -> str:
        """The mask as bools (Keras: mask > 0.5 unless already bool), checked against ``x``."""
        xs, ms = ctx.shape(x), ctx.shape(mask)
        if len(ms) > len(xs):
            raise ShapeError(f"the mask must be broadcastable to the inputs and must not have more dimensions: "
                             f"inputs {xs}, mask {ms}")
        for m, d in zip(ms[::-1], xs[::-1]):
            if isinstance(m, int) and isinstance(d, int) and m != 1 and m != d:
                raise ShapeError(f"the mask must be broadcastable to the inputs; each mask dimension must be 1 "
                                 f"or match the input's: inputs {xs}, mask {ms}")
        if ctx.dtype(mask) == "bool":
            return mask
        return ctx.greater(mask, ctx.constant(np.asarray(0.5, dtype=ctx.dtype(mask)), "half"))

    def lower(self, ctx: LowerContext, inputs, mask=None, **kwargs):
        x = single(inputs)
        dtype = ctx.dtype(x)
        axes = self._axes(ctx.rank(x))
        keep = None
        if mask is not None:
            keep = self._mask(ctx, x, mask)
            x = ctx.where(keep, x, ctx.constant(np.asarray(_large_negative(dtype), dtype=dtype), "masked_logit"))
        if len(axes) == 1:
            y = ctx.softmax(x, axis=axes[0])
        else:  # Keras: exp(x - logsumexp(x, axes))
            top = ctx.reduce_max(x, axes=axes, keepdims=True)
            total = ctx.reduce_sum(ctx.exp(ctx.sub(x, top)), axes=axes, keepdims=True)
            y = ctx.exp(ctx.sub(x, ctx.add(ctx.log(total), top)))
        if keep is not None:
            y = ctx.where(keep, y, ctx.constant(np.zeros((), dtype=dtype), "zero"))
        return y

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class ActivationFunction(Layer):
    """A Keras activation function applied with non-default arguments (``activations.celu(x, alpha=2.0)``).

    Keras records such a call as an operation, not a layer; graphc compiles, exports and trains
    it, but cannot write it in a ``.keras`` file.
    """

    def __init__(self, activation: str, arguments: dict, **kwargs):
        super().__init__(**kwargs)
        if activation not in activations.NAMES:
            raise ValueError(f"unknown activation {activation!r}; graphc knows {', '.join(activations.NAMES)}")
        self.activation = activation
        self.arguments = activations.check_arguments(self.activation, dict(arguments))

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return activations.lower(ctx, self.activation, single(inputs), **self.arguments)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "arguments": dict(self.arguments)}
