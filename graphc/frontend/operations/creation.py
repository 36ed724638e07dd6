"""Creating tensors: ``arange``, ``zeros``, ``ones``, ``full``, the ``*_like`` ops, ``one_hot``.

``arange``/``zeros``/``ones``/``full`` take Python numbers and give NumPy arrays, as Keras's give
concrete tensors: inside a traced ``call`` they become constants where they meet traced tensors
(``positions = ops.arange(length)`` in a position embedding). The ``*_like`` ops and ``one_hot``
follow their tensor argument: nodes, traced IR ops or values, like every other op.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import NN, NUMPY, Operation, apply, array_dtype, cast_to, constant, value_dtype
from graphc.frontend.tensor import KerasTensor
from graphc.frontend.tracing import SymbolicDim, TracedTensor
from graphc.ir.types import normalize_dtype
from graphc.ops.registry import ShapeError

__all__ = ["arange", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "convert_to_tensor",
           "one_hot"]


def _concrete(value, what: str):
    for v in np.ravel(np.asarray(value, dtype=object)):
        if isinstance(v, SymbolicDim):
            raise v._trace.refusal(f"{what} with a dimension known only at run time")
        if isinstance(v, KerasTensor):
            raise TypeError(f"{what} takes Python numbers, not tensors")
    return value


def arange(start, stop=None, step=None, dtype=None) -> np.ndarray:
    """Evenly spaced values in [start, stop): int32 for integer arguments, float32 otherwise."""
    _concrete([start, stop, step], "arange")
    if stop is None:
        start, stop = 0, start
    values = np.arange(start, stop, 1 if step is None else step)
    integral = all(isinstance(v, (int, np.integer)) for v in (start, stop, step) if v is not None)
    return values.astype(normalize_dtype(dtype) if dtype else "int32" if integral else "float32")


def full(shape, fill_value, dtype=None) -> np.ndarray:
    _concrete(shape, "full")
    value = np.asarray(fill_value)
    return np.full(shape, fill_value, dtype=normalize_dtype(dtype) if dtype else array_dtype(value))


def zeros(shape, dtype=None) -> np.ndarray:
    return full(shape, 0.0, dtype or "float32")


def ones(shape, dtype=None) -> np.ndarray:
    return full(shape, 1.0, dtype or "float32")


def convert_to_tensor(x, dtype=None, sparse=None, ragged=None):
    """``x`` as a tensor: tensors pass (cast to ``dtype`` when given), values become NumPy arrays."""
    if sparse or ragged:
        raise ValueError("sparse and ragged tensors are not supported by graphc")
    if isinstance(x, (KerasTensor, TracedTensor)):
        from graphc.frontend.operations.nn_ops import cast

        return x if dtype is None or normalize_dtype(dtype) == x.dtype else cast(x, dtype)
    array = np.asarray(x)
    return array.astype(normalize_dtype(dtype) if dtype else array_dtype(array))


class _Like(Operation):
    """A tensor of ``x``'s shape filled with one value (``x``'s dtype unless ``dtype`` is given)."""

    config_keys = ("dtype",)
    fill = 0.0

    def __init__(self, dtype=None, *, name=None):
        super().__init__(name=name)
        self.dtype = None if dtype is None else normalize_dtype(dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    def _filled(self, ctx: LowerContext, x, fill) -> str:
        x = cast_to(ctx, x, value_dtype(ctx, x))
        dtype = self.dtype or ctx.dtype(x)
        return ctx.broadcast_like(constant(ctx, fill, dtype), x)

    def lower(self, ctx, inputs, **kwargs):
        return self._filled(ctx, inputs[0], self.fill)


class ZerosLike(_Like):
    keras_module = NUMPY


class OnesLike(_Like):
    keras_module = NUMPY
    fill = 1.0


class FullLike(_Like):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x, fill_value = inputs
        if not isinstance(fill_value, (bool, int, float, np.number)):
            raise ShapeError(f"full_like: fill_value must be a number, got {fill_value!r}")
        return self._filled(ctx, x, fill_value)


def zeros_like(x, dtype=None):
    return apply(ZerosLike, (x,), {"dtype": dtype})


def ones_like(x, dtype=None):
    return apply(OnesLike, (x,), {"dtype": dtype})


def full_like(x, fill_value, dtype=None):
    return apply(FullLike, (x, fill_value), {"dtype": dtype})


class OneHot(Operation):
    """Integer ids to one-hot vectors on ``axis`` (negative ids give all zeros, as Keras's torch backend)."""

    keras_module = NN
    config_keys = ("num_classes", "axis", "dtype", "sparse")

    def __init__(self, num_classes, axis=-1, dtype=None, sparse=False, *, name=None):
        super().__init__(name=name)
        if sparse:
            raise ValueError("one_hot(sparse=True) is not supported by graphc")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"one_hot: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes, self.axis, self.sparse = int(num_classes), int(axis), False
        self.dtype = normalize_dtype(dtype or "float32")

    def get_config(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "axis": self.axis, "dtype": self.dtype,
                "sparse": self.sparse}

    def lower(self, ctx, inputs, **kwargs):
        ids = cast_to(ctx, inputs[0], value_dtype(ctx, inputs[0]))
        if ctx.dtype(ids) not in ("int32", "int64"):
            raise ShapeError(f"one_hot: ids must be integers, got {ctx.dtype(ids)}")
        rank = ctx.rank(ids)
        if not (self.axis == -1 or 0 <= self.axis <= rank):
            raise ShapeError(f"one_hot: axis must be -1 or in [0, {rank}], got {self.axis}")
        dtype = self.dtype
        zero = constant(ctx, 0, ctx.dtype(ids))
        y = ctx.one_hot(ctx.maximum(ids, zero), depth=self.num_classes, dtype=dtype)
        valid = ctx.cast(ctx.expand_dims(ctx.greater_equal(ids, zero), axis=-1), dtype=dtype)
        y = ctx.mul(y, valid)
        if self.axis not in (-1, rank):
            perm = tuple(range(self.axis)) + (rank,) + tuple(range(self.axis, rank))
            y = ctx.transpose(y, perm=perm)
        return y


def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    return apply(OneHot, (x,), {"num_classes": num_classes, "axis": axis, "dtype": dtype, "sparse": sparse})
