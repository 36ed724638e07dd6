"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Each takes a list of tensors with Keras 3 semantics. Elementwise merges broadcast the
non-batch dimensions right-aligned (an input of lower rank gets unit axes inserted after
the batch axis, as Keras's ``expand_dims(x, 1)``); incompatible shapes are refused when
the layer is called, with a message naming both shapes. ``Dot`` is Keras's ``batch_dot``
written with transpose, reshape and a batched matmul (no dedicated op), and with
``normalize=True`` it is the cosine similarity. Masks combine as in Keras: an elementwise
merge's output is masked where every input's mask is False (their OR, when each input has
one; Maximum and Minimum also fill masked steps from the other inputs first, Multiply counts
masked steps as ones and zeroes the output where all inputs are masked), Concatenate
masks each step by the OR over its concatenated parts (unmasked inputs count as kept), and
Dot's output has no mask.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import masking, nest
from graphc.frontend.layer import Layer
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor
from graphc.ir import dims
from graphc.ir.types import is_float
from graphc.ops.registry import ShapeError

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
           "add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate", "dot"]

# Keras's normalize(): x * min(rsqrt(sum(x^2)), 1 / 1e-7) == x / sqrt(max(sum(x^2), 1e-14)).
_NORMALIZE_EPSILON = 1e-14


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _input_list(inputs, layer: str) -> list[KerasTensor]:
    """The merge inputs as a list; refuses a single tensor or an empty list."""
    if not isinstance(inputs, (list, tuple)):
        shape = getattr(inputs, "shape", None)
        raise ShapeError(f"a {layer} layer should be called on a list of tensors, got a single "
                         f"{'tensor of shape ' + _fmt(shape) if shape is not None else repr(inputs)}")
    flat = nest.flatten(list(inputs))
    if not flat:
        raise ShapeError(f"a {layer} layer should be called on a list of at least 1 tensor, got an empty list")
    for t in flat:
        if not isinstance(t, KerasTensor):
            raise ShapeError(f"{layer} inputs must be tensors, got {type(t).__name__}: {t!r}")
    return flat


def _check_batch(shapes: list[tuple], layer: str) -> None:
    batch = {s[0] for s in shapes if s} - {None}
    if len(batch) > 1:
        raise ShapeError(f"{layer} cannot merge tensors with different batch sizes: shapes "
                         + ", ".join(_fmt(s) for s in shapes))


def elementwise_shape(shape1: tuple, shape2: tuple) -> tuple:
    """Keras's rule for the non-batch dims of an elementwise merge (right-aligned broadcasting)."""
    if len(shape1) < len(shape2):
        shape1, shape2 = shape2, shape1
    if not shape2:
        return tuple(shape1)
    out = list(shape1[:len(shape1) - len(shape2)])
    for i, j in zip(shape1[len(shape1) - len(shape2):], shape2):
        if i is None or j is None:
            out.append(None)
        elif i == 1:
            out.append(j)
        elif j == 1 or i == j:
            out.append(i)
        else:
            raise ShapeError(f"inputs have incompatible shapes {_fmt(shape1)} and {_fmt(shape2)}")
    return tuple(out)


def _common_dtype(dtypes: list[str]) -> str:
    """The dtype merged inputs are cast to: the widest float if any input is float, else the widest int."""
    floats = [d for d in dtypes if is_float(d)]
    pool = floats or dtypes
    return max(pool, key=lambda d: np.dtype(d).itemsize)


def _cast_all(ctx: LowerContext, values: list[str]) -> list[str]:
    dtype = _common_dtype([ctx.dtype(v) for v in values])
    return [v if ctx.dtype(v) == dtype else ctx.cast(v, dtype=dtype) for v in values]


class _Merge(Layer):
    """Elementwise merge of a list of tensors; subclasses give ``_merge(ctx, values)``."""

    _arity: int | None = None  # exact number of inputs, or None for one or more

    def check_inputs(self, inputs) -> None:
        kind = type(self).__name__
        flat = _input_list(inputs, kind)
        if self._arity is not None and len(flat) != self._arity:
            raise ShapeError(f"a {kind} layer should be called on exactly {self._arity} inputs, "
                             f"got {len(flat)}: " + ", ".join(_fmt(t.shape) for t in flat))
        shapes = [t.shape for t in flat]
        _check_batch(shapes, kind)
        out = shapes[0][1:]
        for s in shapes[1:]:
            try:
                out = elementwise_shape(out, s[1:])
            except ShapeError:
                raise ShapeError(f"{kind} inputs have incompatible shapes: "
                                 + " and ".join(_fmt(s) for s in shapes)) from None

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        aligned = self._aligned(ctx, inputs)
        if len(aligned) == 1:
            return ctx.identity(aligned[0])
        return self._merge(ctx, aligned)

    def _aligned(self, ctx: LowerContext, inputs) -> list[str]:
        values = _cast_all(ctx, nest.flatten(list(inputs)))
        rank = max(ctx.rank(v) for v in values)
        aligned = []
        for v in values:
            for _ in range(rank - ctx.rank(v)):
                v = ctx.expand_dims(v, axis=1)
            aligned.append(v)
        return aligned

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        """Keras's Merge: the OR of the inputs' masks when every input has one, else no mask."""
        masks = nest.flatten(mask) if mask is not None else []
        if not masks or any(m is None for m in masks):
            return None
        return masking.logical_or(ctx, masks)

    def _merge(self, ctx: LowerContext, values: list[str]) -> str:
        raise NotImplementedError

    def _chain(self, ctx: LowerContext, op: str, values: list[str]) -> str:
        out = values[0]
        for v in values[1:]:
            out = ctx.emit(op, out, v)
        return out


class Add(_Merge):
    """The elementwise sum of a list of tensors."""

    def _merge(self, ctx, values):
        return ctx.add(*values) if len(values) == 2 else ctx.add_n(*values)


class Subtract(_Merge):
    """``inputs[0] - inputs[1]`` (exactly two inputs)."""

    _arity = 2

    def _merge(self, ctx, values):
        return ctx.sub(values[0], values[1])


class Multiply(_Merge):
    """The elementwise product of a list of tensors."""

    def _merge(self, ctx, values):
        return self._chain(ctx, "mul", values)

    def lower(self, ctx: LowerContext, inputs, mask=None, **kwargs):
        masks = nest.flatten(mask) if mask is not None else []
        if not any(m is not None for m in masks):
            return super().lower(ctx, inputs, **kwargs)
        values = self._aligned(ctx, inputs)
        one = ctx.constant(np.ones((), dtype=ctx.dtype(values[0])), "one")
        steps = [None if m is None else ctx.expand_dims(masking.as_bool(ctx, m), axis=-1) for m in masks]
        out = None
        for x, m in zip(values, steps):
            x = x if m is None else ctx.where(m, x, one)  # a masked step multiplies by one
            out = x if out is None else ctx.mul(out, x)
        if all(m is not None for m in steps):
            zero = ctx.constant(np.zeros((), dtype=ctx.dtype(out)), "zero")
            out = ctx.where(masking.logical_or(ctx, steps), out, zero)
        return out if len(values) > 1 else ctx.identity(out)


class Average(_Merge):
    """The elementwise mean of a list of tensors: their sum divided by their number."""

    def _merge(self, ctx, values):
        total = ctx.add(*values) if len(values) == 2 else ctx.add_n(*values)
        if not is_float(ctx.dtype(total)):
            total = ctx.cast(total, dtype="float32")
        n = ctx.constant(np.asarray(len(values), dtype=ctx.dtype(total)), "count")
        return ctx.div(total, n)


class _SelectMerge(_Merge):
    """Maximum and Minimum. With masks, Keras merges each input after filling its masked steps
    with the result so far, and the result's masked steps with that input, so that a masked
    step never wins against a kept one."""

    _op = ""

    def _merge(self, ctx, values):
        return self._chain(ctx, self._op, values)

    def lower(self, ctx: LowerContext, inputs, mask=None, **kwargs):
        masks = nest.flatten(mask) if mask is not None else []
        if not any(m is not None for m in masks):
            return super().lower(ctx, inputs, **kwargs)
        values = self._aligned(ctx, inputs)
        steps = [None if m is None else ctx.expand_dims(masking.as_bool(ctx, m), axis=-1) for m in masks]
        out, out_mask = values[0], steps[0]
        for x, m in zip(values[1:], steps[1:]):
            if m is not None:
                x = ctx.where(m, x, out)
            if out_mask is not None:
                out = ctx.where(out_mask, out, x)
            out_mask = masking.logical_or(ctx, [out_mask, m]) if m is not None and out_mask is not None else None
            out = ctx.emit(self._op, out, x)
        return out if len(values) > 1 else ctx.identity(out)


class Maximum(_SelectMerge):
    """The elementwise maximum of a list of tensors."""

    _op = "maximum"


class Minimum(_SelectMerge):
    """The elementwise minimum of a list of tensors."""

    _op = "minimum"


class Concatenate(Layer):
    """Concatenation of a list of tensors along ``axis`` (all other dims must match)."""

    def __init__(self, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Concatenate axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def check_inputs(self, inputs) -> None:
        flat = _input_list(inputs, "Concatenate")
        shapes = [t.shape for t in flat]
        listed = ", ".join(_fmt(s) for s in shapes)
        if len({len(s) for s in shapes}) != 1:
            raise ShapeError(f"Concatenate needs inputs of the same rank, got shapes {listed}")
        rank = len(shapes[0])
        if not -rank <= self.axis < rank:
            raise ShapeError(f"Concatenate axis {self.axis} is out of range for inputs of rank {rank} "
                             f"(shapes {listed})")
        axis = self.axis % rank
        for i in range(rank):
            if i == axis:
                continue
            known = {s[i] for s in shapes} - {None}
            if len(known) > 1:
                raise ShapeError(f"Concatenate (axis={self.axis}) needs inputs with matching shapes except "
                                 f"on the concatenation axis, got shapes {listed}")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        values = _cast_all(ctx, nest.flatten(list(inputs)))
        if len(values) == 1:
            return ctx.identity(values[0])
        return ctx.concat(*values, axis=self.axis)

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        """Keras's rule: each input's mask broadcast over its features (all True for an input
        without a mask), concatenated like the inputs, then OR-ed over the last axis."""
        masks = nest.flatten(mask) if mask is not None else []
        if not any(m is not None for m in masks):
            return None
        parts = []
        for x, m in zip(nest.flatten(list(inputs)), masks):
            if m is None:
                full = ctx.constant(np.ones((), dtype="float32"), "kept")
            else:
                full = masking.as_float(ctx, m)
                while ctx.rank(full) < ctx.rank(x):
                    full = ctx.expand_dims(full, axis=-1)
            parts.append(ctx.broadcast_like(full, x))
        joined = parts[0] if len(parts) == 1 else ctx.concat(*parts, axis=self.axis)
        return masking.any_along(ctx, joined, -1)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def _dot_axes(axes, rank1: int, rank2: int) -> tuple[int, int]:
    """Keras's Dot axes for inputs of ranks ``rank1``/``rank2``: negative axes wrap per input."""
    pair = (axes, axes) if isinstance(axes, int) else tuple(axes)
    out = []
    for a, r in zip(pair, (rank1, rank2)):
        if not -r <= a < r:
            raise ShapeError(f"Dot axis {a} is out of range for an input of rank {r}")
        out.append(a % r)
    return out[0], out[1]


def batch_dot(ctx: LowerContext, x: str, y: str, axes: tuple[int, int]) -> str:
    """Keras's ``batch_dot``: contract ``x`` axis ``axes[0]`` with ``y`` axis ``axes[1]`` per sample.

    The result has x's remaining dims then y's (batch first, once); a rank-1 result becomes
    ``(batch, 1)``. Written as: move the contracted axes next to each other, flatten the free
    dims of each side, one batched matmul ``(N, P, K) @ (N, K, Q)``, reshape back.
    """
    a0, a1 = axes
    xs, ys = ctx.shape(x), ctx.shape(y)
    free_x = [d for i, d in enumerate(xs) if i not in (0, a0)]
    free_y = [d for i, d in enumerate(ys) if i not in (0, a1)]
    batch = xs[0] if isinstance(xs[0], int) else ys[0]
    if not free_x and not free_y:
        # (N, K) . (N, K): a sum of products, kept as (N, 1).
        return ctx.reduce_sum(ctx.mul(x, y), axes=(1,), keepdims=True)
    perm_x = [0] + [i for i in range(1, len(xs)) if i != a0] + [a0]
    if perm_x != list(range(len(xs))):
        x = ctx.transpose(x, perm=tuple(perm_x))
    perm_y = [0, a1] + [i for i in range(1, len(ys)) if i != a1]
    if perm_y != list(range(len(ys))):
        y = ctx.transpose(y, perm=tuple(perm_y))
    k = xs[a0] if isinstance(xs[a0], int) else ys[a1]
    p, q = dims.product(free_x), dims.product(free_y)
    if len(free_x) != 1:
        x = ctx.reshape(x, shape=(batch, p, k))
    if len(free_y) != 1:
        y = ctx.reshape(y, shape=(batch, k, q))
    out = ctx.matmul(x, y)
    target = (batch, *free_x, *free_y)
    if tuple(ctx.shape(out)) != target:
        out = ctx.reshape(out, shape=target)
    return out


class Dot(Layer):
    """Per-sample dot product of two tensors along ``axes`` (cosine similarity if ``normalize``)."""

    def __init__(self, axes, normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axes, (list, tuple)):
            if len(axes) != 2:
                raise ValueError(f"Dot axes should be an integer or a pair of integers, got {axes!r}")
            if not all(isinstance(a, (int, np.integer)) for a in axes):
                raise ValueError(f"Dot axes should be integers, got {axes!r}")
            axes = (int(axes[0]), int(axes[1]))
        elif isinstance(axes, (int, np.integer)):
            axes = int(axes)
        else:
            raise TypeError(f"Dot axes should be an integer or a pair of integers, got {axes!r}")
        self.axes = axes
        self.normalize = bool(normalize)

    def check_inputs(self, inputs) -> None:
        flat = _input_list(inputs, "Dot")
        if len(flat) != 2:
            raise ShapeError(f"a Dot layer should be called on exactly 2 inputs, got {len(flat)}: "
                             + ", ".join(_fmt(t.shape) for t in flat))
        s1, s2 = flat[0].shape, flat[1].shape
        if len(s1) < 2 or len(s2) < 2:
            raise ShapeError(f"Dot needs inputs of rank >= 2 (batch first), got shapes {_fmt(s1)} and {_fmt(s2)}")
        _check_batch([s1, s2], "Dot")
        a0, a1 = _dot_axes(self.axes, len(s1), len(s2))
        if a0 == 0 or a1 == 0:
            raise ShapeError(f"Dot cannot contract the batch axis 0 (axes={self.axes}, shapes "
                             f"{_fmt(s1)} and {_fmt(s2)})")
        d1, d2 = s1[a0], s2[a1]
        if d1 is not None and d2 is not None and d1 != d2:
            raise ShapeError(f"Dot with axes={self.axes} needs equal sizes on the contracted axes: "
                             f"{d1} (axis {a0} of {_fmt(s1)}) != {d2} (axis {a1} of {_fmt(s2)})")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x, y = _cast_all(ctx, nest.flatten(list(inputs)))
        a0, a1 = _dot_axes(self.axes, ctx.rank(x), ctx.rank(y))
        if self.normalize:
            x = ctx.l2_normalize(x, axis=a0, epsilon=_NORMALIZE_EPSILON)
            y = ctx.l2_normalize(y, axis=a1, epsilon=_NORMALIZE_EPSILON)
        return batch_dot(ctx, x, y, (a0, a1))

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        return None

    def get_config(self):
        axes = list(self.axes) if isinstance(self.axes, tuple) else self.axes
        return {**super().get_config(), "axes": axes, "normalize": self.normalize}


def add(inputs, **kwargs):
    """Functional form of :class:`Add`."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """Functional form of :class:`Subtract`."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """Functional form of :class:`Multiply`."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """Functional form of :class:`Average`."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """Functional form of :class:`Maximum`."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """Functional form of :class:`Minimum`."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis: int = -1, **kwargs):
    """Functional form of :class:`Concatenate`."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, normalize: bool = False, **kwargs):
    """Functional form of :class:`Dot`."""
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)
