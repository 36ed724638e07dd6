"""Losses and metrics weighted by the mask a model output carries, as Keras weights them.

When an output carries a Keras mask (a sequence tagger's output inherits its inputs' padding
mask), Keras's losses and metrics count only the kept steps:

- a loss with the "sum_over_batch_size" (or "mean") reduction weights each kept value by
  ``total / kept`` (``total`` the mask's size; zero when nothing is kept) and masked ones by 0
  before taking the mean, so that it is the mean over the kept steps; with "sum" or "none"
  the values are just multiplied by the mask;
- a mean metric adds, per sample, the mean of ``values * mask`` and the mean of the mask (its
  count), so that the result is the mean over the kept steps.

Mask and values meet on the same rank as in Keras (``squeeze_or_expand_to_same_rank``).
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import masking
from graphc.ops.builder import OpBuilder
from graphc.training.losses import same_rank


def _float_mask(b: OpBuilder, mask: str, dtype: str) -> str:
    return masking.as_float(b, mask, dtype)


def weighted_loss_values(b: OpBuilder, values: str, mask: str, reduction: str | None) -> str:
    """Per-sample loss ``values`` weighted by ``mask`` as Keras's ``apply_mask`` does."""
    dtype = b.graph.type_of(values).dtype
    weights = _float_mask(b, mask, dtype)
    if reduction in ("sum_over_batch_size", "mean"):
        rank = b.graph.type_of(weights).rank
        kept = b.reduce_sum(weights, axes=tuple(range(rank))) if rank else weights
        total = b.num_elements(weights, dtype=dtype)
        zero = b.constant(np.zeros((), dtype=dtype), "zero")
        some = b.greater(kept, zero)
        ratio = b.where(some, b.div(total, b.where(some, kept, b.constant(np.ones((), dtype=dtype), "one"))), zero)
        weights = b.mul(weights, ratio)
    values, weights = same_rank(b, values, weights)
    _check_broadcast(b, values, weights, "loss")
    return b.mul(values, weights)


def weighted_metric_totals(b: OpBuilder, values: str, mask: str) -> tuple[str, str]:
    """(total, count) of a mean metric's ``values`` weighted by ``mask`` (Keras's Mean with the
    mask as sample weights), both float32 scalars."""
    dtype = "float32"
    if b.graph.type_of(values).dtype != dtype:
        values = b.cast(values, dtype=dtype)
    weights = _float_mask(b, mask, dtype)
    values, weights = same_rank(b, values, weights)
    v_rank, w_rank = b.graph.type_of(values).rank, b.graph.type_of(weights).rank
    if v_rank > w_rank:
        values = b.reduce_mean(values, axes=tuple(range(w_rank, v_rank)))
    _check_broadcast(b, values, weights, "metric")
    weights = b.broadcast_like(weights, values)
    values = b.mul(values, weights)
    rank = b.graph.type_of(values).rank
    if rank > 1:
        values = b.reduce_mean(values, axes=tuple(range(1, rank)))
        weights = b.reduce_mean(weights, axes=tuple(range(1, rank)))
    total = b.reduce_sum(values, axes=(0,)) if rank else values
    count = b.reduce_sum(weights, axes=(0,)) if rank else weights
    return total, count


def sample_weighted(b: OpBuilder, values: str, weights: str) -> str:
    """Per-sample loss ``values`` times the user's sample weights (Keras's ``reduce_weighted_values``):
    the two meet on the same rank, then broadcast."""
    dtype = b.graph.type_of(values).dtype
    if b.graph.type_of(weights).dtype != dtype:
        weights = b.cast(weights, dtype=dtype)
    values, weights = same_rank(b, values, weights)
    v, w = b.graph.type_of(values), b.graph.type_of(weights)
    if w.rank > v.rank:
        raise ValueError(f"sample_weight of shape {_fmt(w.shape)} cannot weight the loss values of shape "
                         f"{_fmt(v.shape)}: it has more axes than the values")
    return b.mul(values, weights)


def _check_broadcast(b: OpBuilder, values: str, weights: str, what: str) -> None:
    v, w = b.graph.type_of(values), b.graph.type_of(weights)
    if w.rank > v.rank:
        raise ValueError(f"the model output's mask of shape {_fmt(w.shape)} cannot weight the {what} values of shape "
                         f"{_fmt(v.shape)} (Keras cannot either): the mask has more axes than the values")


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if isinstance(d, str) else str(d) for d in shape) + ")"


__all__ = ["weighted_loss_values", "weighted_metric_totals", "sample_weighted"]
