"""``keras.ops`` of Keras's ``numpy`` module: arithmetic, comparisons, reductions, shapes.

Each Keras op class (``Add``, ``Mean``, ``Reshape``...) is an :class:`Operation` with Keras's
name and config; each function (``add``, ``mean``, ``reshape``...) applies it. The lowering
composes graphc's primitive ops, so every backend and the gradients come with it. Python numbers
mixed with tensors take the tensors' dtype, as Keras's weakly typed scalars do.
"""

from __future__ import annotations

import builtins

import numpy as np

from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import (
    NUMPY,
    Operation,
    apply,
    axes_of,
    cast_to,
    constant,
    is_tensor,
    operands,
    value_dtype,
)
from graphc.ir.types import is_float
from graphc.ops.registry import ShapeError

__all__ = [
    "add", "subtract", "multiply", "divide", "true_divide", "power", "negative", "abs", "absolute", "sqrt",
    "square", "exp", "log", "log1p", "expm1", "tanh", "sign", "reciprocal", "maximum", "minimum", "clip",
    "matmul", "mean", "sum", "max", "min", "var", "std", "argmax", "concatenate", "stack", "transpose",
    "reshape", "expand_dims", "squeeze", "where", "greater", "greater_equal", "less", "less_equal", "equal",
    "not_equal", "logical_and", "logical_or", "logical_not", "any", "all",
]


def _tensor(ctx: LowerContext, x) -> str:
    """``x`` as a value (a constant for a Python or NumPy value)."""
    return cast_to(ctx, x, value_dtype(ctx, x))


def _float_tensor(ctx: LowerContext, x) -> str:
    """``x`` as a float value: Keras computes float functions of integers in float32."""
    x = _tensor(ctx, x)
    return x if is_float(ctx.dtype(x)) else ctx.cast(x, dtype="float32")


# ---------------------------------------------------------------------- binary arithmetic
class _Binary(Operation):
    """``op(x1, x2)`` with broadcasting; ``primitive`` is the IR op."""

    primitive = ""
    floating = False

    def lower(self, ctx, inputs, **kwargs):
        a, b = operands(ctx, *inputs, floating=self.floating)
        return ctx.emit(self.primitive, a, b)


class Add(_Binary):
    keras_module = NUMPY
    primitive = "add"


class Subtract(_Binary):
    keras_module = NUMPY
    primitive = "sub"


class Multiply(_Binary):
    keras_module = NUMPY
    primitive = "mul"


class TrueDivide(_Binary):
    keras_module = NUMPY
    primitive = "div"
    floating = True


class Divide(TrueDivide):
    keras_module = NUMPY


class Maximum(_Binary):
    keras_module = NUMPY
    primitive = "maximum"


class Minimum(_Binary):
    keras_module = NUMPY
    primitive = "minimum"


class Power(Operation):
    """``x1 ** x2``; a constant exponent of 2, 1, 0.5 or -1 becomes square, identity, sqrt or reciprocal."""

    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        base, exponent = inputs
        if not is_tensor(ctx, exponent) and np.ndim(exponent) == 0 and is_tensor(ctx, base):
            e = float(exponent)
            if e == 1.0:
                return ctx.identity(base)
            if e == 2.0:
                return _square(ctx, base)
            if is_float(ctx.dtype(base)) and e in (0.5, -1.0):
                return ctx.sqrt(base) if e == 0.5 else ctx.reciprocal(base)
        a, b = operands(ctx, base, exponent)
        return ctx.pow(a, b)


def _square(ctx: LowerContext, x: str) -> str:
    return ctx.square(x) if is_float(ctx.dtype(x)) else ctx.mul(x, x)


def add(x1, x2):
    return apply(Add, (x1, x2))


def subtract(x1, x2):
    return apply(Subtract, (x1, x2))


def multiply(x1, x2):
    return apply(Multiply, (x1, x2))


def true_divide(x1, x2):
    return apply(TrueDivide, (x1, x2))


def divide(x1, x2):
    return apply(Divide, (x1, x2))


def power(x1, x2):
    return apply(Power, (x1, x2))


def maximum(x1, x2):
    return apply(Maximum, (x1, x2))


def minimum(x1, x2):
    return apply(Minimum, (x1, x2))


# ---------------------------------------------------------------------- unary math
class _FloatUnary(Operation):
    """An elementwise float function (integers are computed in float32, as Keras does)."""

    primitive = ""

    def lower(self, ctx, inputs, **kwargs):
        return ctx.emit(self.primitive, _float_tensor(ctx, inputs[0]))


class Sqrt(_FloatUnary):
    keras_module = NUMPY
    primitive = "sqrt"


class Exp(_FloatUnary):
    keras_module = NUMPY
    primitive = "exp"


class Log(_FloatUnary):
    keras_module = NUMPY
    primitive = "log"


class Tanh(_FloatUnary):
    keras_module = NUMPY
    primitive = "tanh"


class Reciprocal(_FloatUnary):
    keras_module = NUMPY
    primitive = "reciprocal"


class Log1p(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x = _float_tensor(ctx, inputs[0])
        return ctx.log(ctx.add(x, constant(ctx, 1.0, ctx.dtype(x))))


class Expm1(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x = _float_tensor(ctx, inputs[0])
        return ctx.sub(ctx.exp(x), constant(ctx, 1.0, ctx.dtype(x)))


class Negative(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        if is_float(ctx.dtype(x)):
            return ctx.neg(x)
        return ctx.sub(constant(ctx, 0, ctx.dtype(x)), x)


class Absolute(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        if is_float(ctx.dtype(x)):
            return ctx.abs(x)
        zero = constant(ctx, 0, ctx.dtype(x))
        return ctx.where(ctx.less(x, zero), ctx.sub(zero, x), x)


class Abs(Absolute):
    keras_module = NUMPY


class Square(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        return _square(ctx, _tensor(ctx, inputs[0]))


class Sign(Operation):
    """-1, 0 or 1 by the sign of each element."""

    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        dtype = ctx.dtype(x)
        zero, one, minus = (constant(ctx, v, dtype) for v in (0, 1, -1))
        return ctx.where(ctx.greater(x, zero), one, ctx.where(ctx.less(x, zero), minus, zero))


def sqrt(x):
    return apply(Sqrt, (x,))


def exp(x):
    return apply(Exp, (x,))


def log(x):
    return apply(Log, (x,))


def log1p(x):
    return apply(Log1p, (x,))


def expm1(x):
    return apply(Expm1, (x,))


def tanh(x):
    return apply(Tanh, (x,))


def reciprocal(x):
    return apply(Reciprocal, (x,))


def negative(x):
    return apply(Negative, (x,))


def absolute(x):
    return apply(Absolute, (x,))


def abs(x):  # noqa: A001 (Keras's name)
    return apply(Absolute, (x,))


def square(x):
    return apply(Square, (x,))


def sign(x):
    return apply(Sign, (x,))


class Clip(Operation):
    keras_module = NUMPY
    config_keys = ("x_min", "x_max")

    def __init__(self, x_min, x_max, *, name=None):
        super().__init__(name=name)
        for key, bound in (("x_min", x_min), ("x_max", x_max)):
            if bound is not None and not isinstance(bound, (int, float, np.number)):
                raise TypeError(f"clip: {key} must be a number, got {bound!r}")
        self.x_min, self.x_max = x_min, x_max

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        return ctx.clip(x, min=None if self.x_min is None else float(self.x_min),
                        max=None if self.x_max is None else float(self.x_max))


def clip(x, x_min, x_max):
    return apply(Clip, (x,), {"x_min": x_min, "x_max": x_max})


# ---------------------------------------------------------------------- comparisons and logic
class _Compare(Operation):
    primitive = ""
    swap = False

    def lower(self, ctx, inputs, **kwargs):
        a, b = operands(ctx, *inputs)
        return ctx.emit(self.primitive, b, a) if self.swap else ctx.emit(self.primitive, a, b)


class Greater(_Compare):
    keras_module = NUMPY
    primitive = "greater"


class GreaterEqual(_Compare):
    keras_module = NUMPY
    primitive = "greater_equal"


class Less(_Compare):
    keras_module = NUMPY
    primitive = "less"


class LessEqual(_Compare):
    keras_module = NUMPY
    primitive = "greater_equal"
    swap = True


class Equal(_Compare):
    keras_module = NUMPY
    primitive = "equal"


def _as_float(ctx: LowerContext, x) -> str:
    """A tensor as float32: a bool is 1.0 where it holds, any other value nonzero where true."""
    x = _tensor(ctx, x)
    if ctx.dtype(x) == "bool":
        return ctx.cast(x, dtype="float32")
    magnitude = ctx.abs(x if is_float(ctx.dtype(x)) else ctx.cast(x, dtype="float32"))
    return ctx.cast(ctx.greater(magnitude, constant(ctx, 0.0, ctx.dtype(magnitude))), dtype="float32")


def _logic(ctx: LowerContext, inputs, combine) -> str:
    """Truth values as 0.0 / 1.0, combined and compared with 0.5: no bool arithmetic, which some
    backends lack (onnxruntime has no bool ``Where``)."""
    values = [_as_float(ctx, x) for x in inputs]
    combined, above = combine(ctx, *values)
    half = constant(ctx, 0.5, "float32")
    return ctx.greater(combined, half) if above else ctx.less(combined, half)


class NotEqual(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        return _logic(ctx, [ctx.equal(*operands(ctx, *inputs))], lambda c, a: (a, False))


class LogicalAnd(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        return _logic(ctx, inputs, lambda c, a, b: (c.mul(a, b), True))


class LogicalOr(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        return _logic(ctx, inputs, lambda c, a, b: (c.add(a, b), True))


class LogicalNot(Operation):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        return _logic(ctx, inputs, lambda c, a: (a, False))


class Any(Operation):
    """Whether any element along ``axis`` is true (nonzero), bool; Keras writes it into functional
    models when a ``Masking`` layer's mask is passed on (``any(not_equal(x, mask_value), -1)``)."""

    keras_module = NUMPY
    config_keys = ("axis", "keepdims")
    primitive = "reduce_max"

    def __init__(self, axis=None, keepdims=False, *, name=None):
        super().__init__(name=name)
        self.axis = [axis] if isinstance(axis, int) else list(axis) if isinstance(axis, (list, tuple)) else axis
        self.keepdims = bool(keepdims)

    def lower(self, ctx, inputs, **kwargs):
        def reduce(c, a):
            axes = axes_of(self.axis, c.rank(a), type(self).__name__.lower())
            return c.emit(self.primitive, a, axes=axes, keepdims=self.keepdims), True

        return _logic(ctx, inputs[:1], reduce)


class All(Any):
    """Whether every element along ``axis`` is true (nonzero), bool."""

    keras_module = NUMPY
    primitive = "reduce_min"


def any(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    return apply(Any, (x,), {"axis": axis, "keepdims": keepdims})


def all(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    return apply(All, (x,), {"axis": axis, "keepdims": keepdims})


def greater(x1, x2):
    return apply(Greater, (x1, x2))


def greater_equal(x1, x2):
    return apply(GreaterEqual, (x1, x2))


def less(x1, x2):
    return apply(Less, (x1, x2))


def less_equal(x1, x2):
    return apply(LessEqual, (x1, x2))


def equal(x1, x2):
    return apply(Equal, (x1, x2))


def not_equal(x1, x2):
    return apply(NotEqual, (x1, x2))


def logical_and(x1, x2):
    return apply(LogicalAnd, (x1, x2))


def logical_or(x1, x2):
    return apply(LogicalOr, (x1, x2))


def logical_not(x):
    return apply(LogicalNot, (x,))


class Where(Operation):
    """``x1`` where ``condition`` holds, else ``x2`` (with broadcasting)."""

    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        inputs = list(inputs) + [None] * (3 - len(inputs))
        condition, x1, x2 = inputs
        if x1 is None or x2 is None:
            raise ShapeError("where(condition) without x1 and x2 (the indices of nonzero elements) has a "
                             "data-dependent shape, which graphc does not support")
        a, b = operands(ctx, x1, x2)
        condition = _tensor(ctx, condition)
        if ctx.dtype(condition) != "bool":
            condition = ctx.greater(_as_float(ctx, condition), constant(ctx, 0.5, "float32"))
        return ctx.where(condition, a, b)


def where(condition, x1=None, x2=None):
    return apply(Where, (condition, x1, x2))


# ---------------------------------------------------------------------- products
class Matmul(Operation):
    """NumPy's matmul: 1-D operands are promoted to matrices and the added axis removed."""

    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        a, b = operands(ctx, *inputs)
        if not is_float(ctx.dtype(a)):
            raise ShapeError(f"matmul of {ctx.dtype(a)} tensors is not supported by graphc (float only)")
        if ctx.rank(a) == 0 or ctx.rank(b) == 0:
            raise ShapeError("matmul operands must have rank >= 1 (use multiply for scalars)")
        vector_a, vector_b = ctx.rank(a) == 1, ctx.rank(b) == 1
        if vector_b:
            b = ctx.expand_dims(b, axis=-1)
        if vector_a and ctx.rank(b) > 2:
            a = ctx.expand_dims(a, axis=0)
        y = ctx.matmul(a, b)
        if vector_b:
            y = ctx.squeeze(y, axis=-1)
        if vector_a and ctx.rank(b) > 2:
            y = ctx.squeeze(y, axis=-1 if vector_b else -2)
        return y


def matmul(x1, x2):
    return apply(Matmul, (x1, x2))


# ---------------------------------------------------------------------- reductions
class _Reduce(Operation):
    config_keys = ("axis", "keepdims")
    primitive = ""

    def __init__(self, axis=None, keepdims=False, *, name=None):
        super().__init__(name=name)
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else axis
        self.keepdims = bool(keepdims)

    def _input(self, ctx, x) -> str:
        return _tensor(ctx, x)

    def lower(self, ctx, inputs, **kwargs):
        x = self._input(ctx, inputs[0])
        axes = axes_of(self.axis, ctx.rank(x), type(self).__name__.lower())
        return ctx.emit(self.primitive, x, axes=axes, keepdims=self.keepdims)


class Mean(_Reduce):
    keras_module = NUMPY
    primitive = "reduce_mean"

    def _input(self, ctx, x) -> str:
        return _float_tensor(ctx, x)


class Sum(_Reduce):
    keras_module = NUMPY
    primitive = "reduce_sum"


class Max(_Reduce):
    keras_module = NUMPY
    config_keys = ("axis", "keepdims", "initial")
    primitive = "reduce_max"

    def __init__(self, axis=None, keepdims=False, initial=None, *, name=None):
        super().__init__(axis, keepdims, name=name)
        if initial is not None:
            raise ValueError(f"{type(self).__name__.lower()}(initial={initial!r}) is not supported by graphc")
        self.initial = None


class Min(Max):
    keras_module = NUMPY
    primitive = "reduce_min"


class Var(_Reduce):
    """Mean of squared deviations from the mean (population variance, as Keras's ``var``)."""

    keras_module = NUMPY

    def _variance(self, ctx, x) -> str:
        x = _float_tensor(ctx, x)
        axes = axes_of(self.axis, ctx.rank(x), type(self).__name__.lower())
        centered = ctx.sub(x, ctx.reduce_mean(x, axes=axes, keepdims=True))
        return ctx.reduce_mean(ctx.square(centered), axes=axes, keepdims=self.keepdims)

    def lower(self, ctx, inputs, **kwargs):
        return self._variance(ctx, inputs[0])


class Std(Var):
    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        return ctx.sqrt(self._variance(ctx, inputs[0]))


class Argmax(_Reduce):
    """Index of the largest element along ``axis`` (of the flattened tensor when None), int32."""

    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        if self.axis is None:
            x, axis = ctx.reshape(x, shape=(-1,)), 0
        elif isinstance(self.axis, int):
            axis = axes_of(self.axis, ctx.rank(x), "argmax")[0]
        else:
            raise ShapeError(f"argmax takes one axis, got {self.axis!r}")
        y = ctx.cast(ctx.argmax(x, axis=axis), dtype="int32")
        return ctx.expand_dims(y, axis=axis) if self.keepdims and self.axis is not None else y


def mean(x, axis=None, keepdims=False):
    return apply(Mean, (x,), {"axis": axis, "keepdims": keepdims})


def sum(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    return apply(Sum, (x,), {"axis": axis, "keepdims": keepdims})


def max(x, axis=None, keepdims=False, initial=None):  # noqa: A001 (Keras's name)
    return apply(Max, (x,), {"axis": axis, "keepdims": keepdims, "initial": initial})


def min(x, axis=None, keepdims=False, initial=None):  # noqa: A001 (Keras's name)
    return apply(Min, (x,), {"axis": axis, "keepdims": keepdims, "initial": initial})


def var(x, axis=None, keepdims=False):
    return apply(Var, (x,), {"axis": axis, "keepdims": keepdims})


def std(x, axis=None, keepdims=False):
    return apply(Std, (x,), {"axis": axis, "keepdims": keepdims})


def argmax(x, axis=None, keepdims=False):
    return apply(Argmax, (x,), {"axis": axis, "keepdims": keepdims})


# ---------------------------------------------------------------------- joining and shapes
class Concatenate(Operation):
    keras_module = NUMPY
    config_keys = ("axis",)

    def __init__(self, axis=0, *, name=None):
        super().__init__(name=name)
        self.axis = axis

    def lower(self, ctx, inputs, **kwargs):
        xs = operands(ctx, *inputs[0])
        if not xs:
            raise ShapeError("concatenate needs at least one tensor")
        axis = axes_of(self.axis, ctx.rank(xs[0]), "concatenate")[0]
        return ctx.concat(*xs, axis=axis) if len(xs) > 1 else ctx.identity(xs[0])


class Stack(Operation):
    keras_module = NUMPY
    config_keys = ("axis",)

    def __init__(self, axis=0, *, name=None):
        super().__init__(name=name)
        self.axis = axis

    def lower(self, ctx, inputs, **kwargs):
        xs = operands(ctx, *inputs[0])
        if not xs:
            raise ShapeError("stack needs at least one tensor")
        axis = axes_of(self.axis, ctx.rank(xs[0]) + 1, "stack")[0]
        parts = [ctx.expand_dims(x, axis=axis) for x in xs]
        return ctx.concat(*parts, axis=axis) if len(parts) > 1 else parts[0]


def concatenate(xs, axis=0):
    return apply(Concatenate, (list(xs),), {"axis": axis})


def stack(x, axis=0):
    return apply(Stack, (list(x),), {"axis": axis})


class Transpose(Operation):
    keras_module = NUMPY
    config_keys = ("axes",)

    def __init__(self, axes=None, *, name=None):
        super().__init__(name=name)
        self.axes = None if axes is None else [int(a) for a in axes]

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        rank = ctx.rank(x)
        perm = tuple(reversed(range(rank))) if self.axes is None else tuple(self.axes)
        if sorted(a % rank if -rank <= a < rank else a for a in perm) != list(range(rank)):
            raise ShapeError(f"transpose axes {self.axes} are not a permutation of the {rank} axes")
        return ctx.transpose(x, perm=tuple(a % rank for a in perm))


def transpose(x, axes=None):
    return apply(Transpose, (x,), {"axes": axes})


class Reshape(Operation):
    """Reshape to ``newshape`` (the batch axis included); -1 is inferred."""

    keras_module = NUMPY
    config_keys = ("newshape",)

    def __init__(self, newshape, *, name=None):
        super().__init__(name=name)
        self.newshape = [newshape] if not isinstance(newshape, (list, tuple)) else list(newshape)

    def get_config(self) -> dict:
        from graphc.frontend.tracing import SymbolicDim

        if builtins.any(isinstance(d, SymbolicDim) for d in self.newshape):  # (``any`` here is Keras's)
            raise ValueError("a reshape to run-time dimensions exists only inside a layer's call()")
        return super().get_config()

    def lower(self, ctx, inputs, **kwargs):
        from graphc.frontend.tracing import SymbolicDim

        target = []
        for d in self.newshape:
            if isinstance(d, SymbolicDim):
                target.append(d.dim)
            elif isinstance(d, (int, np.integer)) and not isinstance(d, bool):
                target.append(int(d))
            else:
                raise ShapeError(f"reshape: target {self.newshape} has the entry {d!r}; use ints and -1 "
                                 "(inside call(), graphc.ops.shape(x)[i] for a dimension known only at run time)")
        return ctx.reshape(_tensor(ctx, inputs[0]), shape=tuple(target))


def reshape(x, newshape):
    return apply(Reshape, (x,), {"newshape": newshape})


class ExpandDims(Operation):
    keras_module = NUMPY
    config_keys = ("axis",)

    def __init__(self, axis, *, name=None):
        super().__init__(name=name)
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else axis

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        count = len(self.axis) if isinstance(self.axis, list) else 1
        for axis in axes_of(self.axis, ctx.rank(x) + count, "expand_dims"):
            x = ctx.expand_dims(x, axis=axis)
        return x


def expand_dims(x, axis):
    return apply(ExpandDims, (x,), {"axis": axis})


class Squeeze(Operation):
    """Remove unit axes: the given ones, or every axis known to be 1."""

    keras_module = NUMPY
    config_keys = ("axis",)

    def __init__(self, axis=None, *, name=None):
        super().__init__(name=name)
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else axis

    def lower(self, ctx, inputs, **kwargs):
        x = _tensor(ctx, inputs[0])
        shape = ctx.shape(x)
        if self.axis is None:
            axes = tuple(i for i, d in enumerate(shape) if d == 1)
        else:
            axes = axes_of(self.axis, len(shape), "squeeze")
        for axis in axes:
            if shape[axis] != 1:
                raise ShapeError(f"squeeze: axis {axis} of a tensor of shape {shape} is not 1")
        for axis in reversed(axes):
            x = ctx.squeeze(x, axis=axis)
        return x if axes else ctx.identity(x)


def squeeze(x, axis=None):
    return apply(Squeeze, (x,), {"axis": axis})
