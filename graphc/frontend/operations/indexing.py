"""Indexing ops: ``x[key]`` (Keras's ``GetItem``) and ``take``.

A key is NumPy basic indexing: ints, slices with a positive step, ``None`` (a new unit axis)
and one ``Ellipsis``. It lowers to ``slice`` ops (an int index is a one-element slice whose
axis is then squeezed) and ``expand_dims``. ``take`` gathers along one axis by moving that
axis first, gathering rows, and moving the gathered axes back.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import NUMPY, Operation, apply, axes_of, cast_to, is_tensor, value_dtype
from graphc.ops.registry import ShapeError

__all__ = ["get_item", "take"]


def _key_items(key) -> list:
    if isinstance(key, (list, tuple)):
        items = list(key)
    else:
        items = [key]
    if items.count(Ellipsis) > 1:
        raise ShapeError(f"an index may hold one Ellipsis, got {key!r}")
    return items


def _int_index(index) -> bool:
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_))


class GetItem(Operation):
    """``x[key]`` for basic indexing."""

    keras_module = NUMPY

    def lower(self, ctx, inputs, **kwargs):
        x, key = inputs
        x = cast_to(ctx, x, value_dtype(ctx, x))
        items = _key_items(key)
        for item in items:
            if is_tensor(ctx, item) or not (item is None or item is Ellipsis or isinstance(item, slice)
                                            or _int_index(item)):
                raise ShapeError(f"index {item!r} in {key!r}: graphc indexes with ints, slices, None and "
                                 "Ellipsis (use graphc.ops.take to pick elements by a tensor of indices)")
        consuming = sum(1 for item in items if item is not None and item is not Ellipsis)
        rank = ctx.rank(x)
        if consuming > rank:
            raise ShapeError(f"too many indices for a tensor of rank {rank}: {key!r}")
        if Ellipsis not in items:
            items.append(Ellipsis)
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (rank - consuming)

        axis, squeezed = 0, []
        for item in items:
            if item is None:
                x = ctx.expand_dims(x, axis=axis)
                axis += 1
                continue
            if isinstance(item, slice):
                x = _slice(ctx, x, axis, item)
            else:
                x = _slice(ctx, x, axis, _one_element(ctx.shape(x)[axis], int(item), key))
                squeezed.append(axis)
            axis += 1
        for a in reversed(squeezed):
            x = ctx.squeeze(x, axis=a)
        return x if ctx.graph.values[x].kind == "op" else ctx.identity(x)


def _one_element(n, index: int, key) -> slice:
    if isinstance(n, int):
        if not -n <= index < n:
            raise ShapeError(f"index {index} is out of bounds for an axis of size {n} (key {key!r})")
        index %= n
        return slice(index, index + 1, 1)
    return slice(index, index + 1 if index != -1 else None, 1)


def _slice(ctx: LowerContext, x: str, axis: int, item: slice) -> str:
    for part in (item.start, item.stop, item.step):
        if part is not None and not _int_index(part):
            raise ShapeError(f"slice {item!r}: graphc slices with constant ints")
    step = 1 if item.step is None else int(item.step)
    if step <= 0:
        raise ShapeError(f"slice {item!r}: graphc slices with a positive step")
    n = ctx.shape(x)[axis]
    if isinstance(n, int):
        start, stop, step = item.indices(n)
        if (start, stop, step) == (0, n, 1):
            return x
        return ctx.slice(x, axis=axis, start=start, stop=stop, step=step)
    if item.start in (None, 0) and item.stop is None and step == 1:
        return x
    return ctx.slice(x, axis=axis, start=0 if item.start is None else int(item.start),
                     stop=None if item.stop is None else int(item.stop), step=step)


def get_item(x, key):
    return apply(GetItem, (x, key))


class Take(Operation):
    """Elements of ``x`` at ``indices`` along ``axis`` (of the flattened ``x`` when None)."""

    keras_module = NUMPY
    config_keys = ("axis",)

    def __init__(self, axis=None, *, name=None):
        super().__init__(name=name)
        self.axis = axis

    def lower(self, ctx, inputs, **kwargs):
        x, indices = inputs
        x = cast_to(ctx, x, value_dtype(ctx, x))
        if self.axis is None:
            x, axis = ctx.reshape(x, shape=(-1,)), 0
        else:
            axis = axes_of(self.axis, ctx.rank(x), "take")[0]
        ids = _indices(ctx, indices, ctx.shape(x)[axis])
        rank, k = ctx.rank(x), ctx.rank(ids)
        if axis:
            x = ctx.transpose(x, perm=(axis,) + tuple(i for i in range(rank) if i != axis))
        y = ctx.gather(x, ids)
        if axis and k:  # (ids..., x's other axes) -> (x's axes before, ids..., x's axes after)
            perm = tuple(range(k, k + axis)) + tuple(range(k)) + tuple(range(k + axis, k + rank - 1))
            y = ctx.transpose(y, perm=perm)
        return y


def _indices(ctx: LowerContext, indices, n) -> str:
    """The index tensor: constants wrapped into range (negative ones count from the end, as NumPy's)."""
    if is_tensor(ctx, indices):
        if ctx.dtype(indices) not in ("int32", "int64"):
            raise ShapeError(f"take: indices must be integers, got {ctx.dtype(indices)}")
        return indices
    array = np.asarray(indices)
    if not np.issubdtype(array.dtype, np.integer):
        raise ShapeError(f"take: indices must be integers, got {indices!r}")
    if isinstance(n, int):
        if array.size and (array.min() < -n or array.max() >= n):
            raise ShapeError(f"take: index out of range for an axis of size {n}: {indices!r}")
        array = array % n
    elif array.size and array.min() < 0:
        raise ShapeError("take: negative indices need an axis whose size is known")
    return ctx.constant(array.astype(np.int32), name="indices")


def take(x, indices, axis=None):
    return apply(Take, (x, indices), {"axis": axis})
