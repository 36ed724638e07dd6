"""Keras masks as IR values, and the few operations layers perform on them.

A mask says which steps of a sequence hold data: ``Embedding(mask_zero=True)`` masks the
padding ids, ``Masking`` the all-``mask_value`` steps. Keras attaches it to the output
tensor; graphc carries it beside the value while a model is lowered (see ``Layer``'s
masking protocol in :mod:`graphc.frontend.layer`), so in the IR a mask is an ordinary value
and every backend runs it like any other.

A mask that graphc computes is a ``bool`` value shaped like its tensor without the feature
axis — (batch, time) for a sequence — True where the step is kept, as in Keras. A mask a
model passes explicitly (``layer(x, mask=m)``, or a ``.keras`` file's recorded call) may be
of any dtype: nonzero means kept. Layers therefore read masks through :func:`as_bool` or
:func:`as_float`. The helpers build logical operations from comparisons and float
arithmetic, which every backend (ONNX included) runs on any shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.ops.builder import OpBuilder


def _const(ctx: OpBuilder, value, dtype: str) -> str:
    return ctx.constant(np.asarray(value, dtype=dtype), "mask_const")


def not_equal(ctx: OpBuilder, x: str, value) -> str:
    """``x != value`` elementwise, as a bool value."""
    same = ctx.equal(x, _const(ctx, value, ctx.graph.type_of(x).dtype))
    return ctx.equal(same, _const(ctx, False, "bool"))


def as_bool(ctx: OpBuilder, mask: str) -> str:
    """The mask as bool (nonzero entries are kept steps)."""
    if ctx.graph.type_of(mask).dtype == "bool":
        return mask
    return not_equal(ctx, mask, 0)


def as_float(ctx: OpBuilder, mask: str, dtype: str = "float32") -> str:
    """The mask as 1.0 (kept) / 0.0 (masked) of ``dtype``."""
    return ctx.cast(as_bool(ctx, mask), dtype=dtype)


def logical_and(ctx: OpBuilder, masks: Sequence[str]) -> str:
    """True where every mask is (masks broadcast against each other)."""
    return _combine(ctx, masks, "minimum")


def logical_or(ctx: OpBuilder, masks: Sequence[str]) -> str:
    """True where any mask is (masks broadcast against each other)."""
    return _combine(ctx, masks, "maximum")


def _combine(ctx: OpBuilder, masks: Sequence[str], op: str) -> str:
    masks = list(masks)
    if len(masks) == 1:
        return as_bool(ctx, masks[0])
    acc = as_float(ctx, masks[0])
    for m in masks[1:]:
        acc = ctx.emit(op, acc, as_float(ctx, m))
    return ctx.greater(acc, _const(ctx, 0.0, "float32"))


def any_along(ctx: OpBuilder, cond: str, axis: int, keepdims: bool = False) -> str:
    """True where ``cond`` holds for at least one entry along ``axis``."""
    reduced = ctx.reduce_max(as_float(ctx, cond), axes=(axis,), keepdims=keepdims)
    return ctx.greater(reduced, _const(ctx, 0.0, "float32"))


__all__ = ["not_equal", "as_bool", "as_float", "logical_and", "logical_or", "any_along"]
