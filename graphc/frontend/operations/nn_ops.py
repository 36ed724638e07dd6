"""``keras.ops`` of Keras's ``nn``, ``core`` and ``math`` modules: activations, softmax, cast, shape.

Activations follow Keras's op definitions (``gelu`` is the tanh approximation unless
``approximate=False``, ``relu6`` clips at 6, ``hard_silu`` is ``x * hard_sigmoid(x)``).
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import tracing
from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import CORE, MATH, NN, Operation, apply, cast_to, value_dtype
from graphc.frontend.tensor import KerasTensor
from graphc.ir.types import is_float, normalize_dtype
from graphc.ops.registry import ShapeError

__all__ = ["relu", "relu6", "sigmoid", "silu", "swish", "softplus", "softsign", "selu", "elu", "gelu",
           "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu", "softmax", "log_softmax", "rsqrt", "cast",
           "shape"]


def _float(ctx: LowerContext, x) -> str:
    x = cast_to(ctx, x, value_dtype(ctx, x))
    if not is_float(ctx.dtype(x)):
        x = ctx.cast(x, dtype="float32")
    return x


class _Activation(Operation):
    """An activation: one IR op with fixed attributes."""

    primitive = ""
    attrs: dict = {}

    def lower(self, ctx, inputs, **kwargs):
        return ctx.emit(self.primitive, _float(ctx, inputs[0]), **self.attrs)


class Relu(_Activation):
    keras_module = NN
    primitive = "relu"


class Relu6(_Activation):
    keras_module = NN
    primitive = "relu"
    attrs = {"max_value": 6.0}


class Sigmoid(_Activation):
    keras_module = NN
    primitive = "sigmoid"


class Silu(_Activation):
    keras_module = NN
    primitive = "silu"


class Softplus(_Activation):
    keras_module = NN
    primitive = "softplus"


class Softsign(_Activation):
    keras_module = NN
    primitive = "softsign"


class Selu(_Activation):
    keras_module = NN
    primitive = "selu"


class HardSigmoid(_Activation):
    keras_module = NN
    primitive = "hard_sigmoid"


class HardSilu(Operation):
    keras_module = NN

    def lower(self, ctx, inputs, **kwargs):
        x = _float(ctx, inputs[0])
        return ctx.mul(x, ctx.hard_sigmoid(x))


class Elu(Operation):
    keras_module = NN
    config_keys = ("alpha",)

    def __init__(self, alpha=1.0, *, name=None):
        super().__init__(name=name)
        self.alpha = float(alpha)

    def lower(self, ctx, inputs, **kwargs):
        return ctx.elu(_float(ctx, inputs[0]), alpha=self.alpha)


class LeakyRelu(Operation):
    keras_module = NN
    config_keys = ("negative_slope",)

    def __init__(self, negative_slope=0.2, *, name=None):
        super().__init__(name=name)
        self.negative_slope = float(negative_slope)

    def lower(self, ctx, inputs, **kwargs):
        return ctx.relu(_float(ctx, inputs[0]), negative_slope=self.negative_slope)


class Gelu(Operation):
    keras_module = NN
    config_keys = ("approximate",)

    def __init__(self, approximate=True, *, name=None):
        super().__init__(name=name)
        self.approximate = bool(approximate)

    def lower(self, ctx, inputs, **kwargs):
        return ctx.gelu(_float(ctx, inputs[0]), approximate=self.approximate)


class Softmax(Operation):
    keras_module = NN
    config_keys = ("axis",)
    primitive = "softmax"

    def __init__(self, axis=-1, *, name=None):
        super().__init__(name=name)
        if not isinstance(axis, int):
            raise ValueError(f"{type(self).__name__.lower()} over several axes ({axis!r}) is not supported by graphc")
        self.axis = axis

    def lower(self, ctx, inputs, **kwargs):
        x = _float(ctx, inputs[0])
        if not -ctx.rank(x) <= self.axis < ctx.rank(x):
            raise ShapeError(f"axis {self.axis} is out of range for a tensor of rank {ctx.rank(x)}")
        return ctx.emit(self.primitive, x, axis=self.axis)


class LogSoftmax(Softmax):
    keras_module = NN
    primitive = "log_softmax"


class Rsqrt(Operation):
    keras_module = MATH

    def lower(self, ctx, inputs, **kwargs):
        return ctx.reciprocal(ctx.sqrt(_float(ctx, inputs[0])))


def relu(x):
    return apply(Relu, (x,))


def relu6(x):
    return apply(Relu6, (x,))


def sigmoid(x):
    return apply(Sigmoid, (x,))


def silu(x):
    return apply(Silu, (x,))


swish = silu


def softplus(x):
    return apply(Softplus, (x,))


def softsign(x):
    return apply(Softsign, (x,))


def selu(x):
    return apply(Selu, (x,))


def hard_sigmoid(x):
    return apply(HardSigmoid, (x,))


def hard_silu(x):
    return apply(HardSilu, (x,))


hard_swish = hard_silu


def elu(x, alpha=1.0):
    return apply(Elu, (x,), {"alpha": alpha})


def leaky_relu(x, negative_slope=0.2):
    return apply(LeakyRelu, (x,), {"negative_slope": negative_slope})


def gelu(x, approximate=True):
    return apply(Gelu, (x,), {"approximate": approximate})


def softmax(x, axis=-1):
    return apply(Softmax, (x,), {"axis": axis})


def log_softmax(x, axis=-1):
    return apply(LogSoftmax, (x,), {"axis": axis})


def rsqrt(x):
    return apply(Rsqrt, (x,))


class Cast(Operation):
    keras_module = CORE
    config_keys = ("dtype",)

    def __init__(self, dtype, *, name=None):
        super().__init__(name=name)
        self.dtype = normalize_dtype(dtype)

    def lower(self, ctx, inputs, **kwargs):
        return cast_to(ctx, inputs[0], self.dtype)


def cast(x, dtype):
    return apply(Cast, (x,), {"dtype": dtype})


class ConvertToTensor(Operation):
    """The tensor itself (cast when ``dtype`` is given): the node Keras writes into functional models
    when an ``Attention`` layer's mask is passed on (graphc's own ``convert_to_tensor`` adds no node).
    Sparse and ragged tensors do not exist in graphc."""

    keras_module = CORE
    config_keys = ("dtype", "sparse", "ragged")

    def __init__(self, dtype=None, sparse=None, ragged=None, *, name=None):
        super().__init__(name=name)
        for option, value in (("sparse", sparse), ("ragged", ragged)):
            if value:
                raise ValueError(f"convert_to_tensor({option}=True) is not supported by graphc")
        self.dtype = None if dtype is None else normalize_dtype(dtype)
        self.sparse, self.ragged = sparse, ragged

    def lower(self, ctx, inputs, **kwargs):
        return inputs[0] if self.dtype is None else cast_to(ctx, inputs[0], self.dtype)


def shape(x) -> tuple:
    """The shape of ``x``: None for unknown dims of a symbolic tensor; inside a traced ``call``,
    dims known only at run time are :class:`~graphc.frontend.tracing.SymbolicDim` objects that
    reshape targets accept."""
    trace = tracing.current_trace((x,))
    if trace is not None:
        value = trace.value_of(x)
        return tuple(d if isinstance(d, int) else tracing.SymbolicDim(d, trace) for d in trace.ctx.shape(value))
    if isinstance(x, KerasTensor):
        return tuple(x.shape)
    return tuple(np.shape(x))
