"""Image resampling lowered to primitive ops: repetition, linear upsampling and resizing by tables.

Three building blocks the shape and preprocessing layers share, each composed of existing ops
so that every backend and the gradient come for free:

- :func:`repeat`: every element repeated ``f`` times along some axes (``UpSampling*`` nearest,
  ``RepeatVector``): one reshape that opens a unit axis after each repeated one, one broadcasting
  multiply by ones, one reshape that merges the pairs. Exact, and free dims stay free.
- :func:`linear_upsample`: PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` for an
  integer factor ``s`` along one axis (what Keras's torch backend computes for
  ``UpSampling2D(interpolation="bilinear")``). Output ``s*k + r`` reads the source position
  ``k + d_r`` with ``d_r = (r + 0.5)/s - 0.5``, so each phase ``r`` is a fixed blend of ``x`` and
  its neighbour (``x`` shifted by one, the edge repeated: PyTorch clamps the source index there).
  The ``s`` phases are interleaved by stacking on a new axis and merging it. The size of the
  axis may be free.
- :func:`resize_axis`: Keras's ``ops.image.resize`` on the torch backend (``F.interpolate`` with
  ``nearest-exact`` or ``bilinear``, ``align_corners=False``, no antialiasing) between two known
  sizes: the source indices and weights are computed once, in float32 as PyTorch does, and
  applied with ``gather`` on the axis moved to the front.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphc.frontend.lowering import LowerContext
from graphc.ir import dims


def _scalar(ctx: LowerContext, x: str, value: float, name: str) -> str:
    return ctx.constant(np.asarray(value, dtype=ctx.dtype(x)), name)


def repeat(ctx: LowerContext, x: str, factors: Mapping[int, int]) -> str:
    """``x`` with each element repeated ``factors[axis]`` times along each given axis."""
    factors = {a: f for a, f in factors.items() if f != 1}
    if not factors:
        return x
    shape = ctx.shape(x)
    opened, ones, merged = [], [], []
    for axis, d in enumerate(shape):
        opened.append(d)
        ones.append(1)
        if axis in factors:
            opened.append(1)
            ones.append(factors[axis])
        merged.append(dims.mul(d, factors[axis]) if axis in factors else d)
    spread = ctx.mul(ctx.reshape(x, shape=tuple(opened)), ctx.constant(np.ones(ones, dtype=ctx.dtype(x)), "repeat"))
    return ctx.reshape(spread, shape=tuple(merged))


def linear_upsample(ctx: LowerContext, x: str, axis: int, factor: int) -> str:
    """``x`` upsampled ``factor`` times along ``axis`` by linear interpolation (half-pixel centres)."""
    if factor == 1:
        return x
    shape = ctx.shape(x)
    n = shape[axis]
    if n == 1:
        return repeat(ctx, x, {axis: factor})
    # previous[k] = x[max(k - 1, 0)], following[k] = x[min(k + 1, n - 1)]: windows of x with its edges
    # repeated (no intermediate is empty, even when a free size is 1 at run time)
    edged = ctx.concat(ctx.slice(x, axis=axis, start=0, stop=1), x, ctx.slice(x, axis=axis, start=-1), axis=axis)
    previous = ctx.slice(edged, axis=axis, start=0, stop=-2)
    following = ctx.slice(edged, axis=axis, start=2)
    phases = []
    for r in range(factor):
        d = (r + 0.5) / factor - 0.5
        if d == 0:
            y = x
        elif d < 0:  # between x[k - 1] and x[k]
            y = ctx.add(ctx.mul(x, _scalar(ctx, x, 1.0 + d, "lerp")), ctx.mul(previous, _scalar(ctx, x, -d, "lerp")))
        else:  # between x[k] and x[k + 1]
            y = ctx.add(ctx.mul(x, _scalar(ctx, x, 1.0 - d, "lerp")), ctx.mul(following, _scalar(ctx, x, d, "lerp")))
        phases.append(ctx.expand_dims(y, axis=axis + 1))
    stacked = ctx.concat(*phases, axis=axis + 1)
    out_shape = list(shape)
    out_shape[axis] = dims.mul(n, factor)
    return ctx.reshape(stacked, shape=tuple(out_shape))


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's ``nearest-exact`` source index of each output position (float32 arithmetic)."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's linear interpolation (``align_corners=False``): for each output position the two
    source indices and the weight of the second (float32 arithmetic, as its CPU kernel)."""
    scale = np.float32(n_in) / np.float32(n_out)
    real = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    real = np.maximum(real, np.float32(0.0))
    first = np.minimum(real.astype(np.int64), n_in - 1)
    lam = np.clip(real - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    second = first + (first < n_in - 1)
    return first, second, lam.astype(np.float32)


def resize_axis(ctx: LowerContext, x: str, axis: int, size: int, interpolation: str) -> str:
    """``x`` resized along ``axis`` (of known length) to ``size`` ("nearest" or "bilinear")."""
    n = ctx.shape(x)[axis]
    if n == size:
        return x
    rank = ctx.rank(x)
    perm = (axis,) + tuple(a for a in range(rank) if a != axis)
    inverse = tuple(perm.index(a) for a in range(rank))
    front = ctx.transpose(x, perm=perm)
    if interpolation == "nearest":
        out = ctx.gather(front, ctx.constant(nearest_indices(n, size).astype(np.int32), "resize_index"))
    else:
        first, second, lam = linear_weights(n, size)
        dtype = ctx.dtype(x)
        column = (size,) + (1,) * (rank - 1)
        a = ctx.gather(front, ctx.constant(first.astype(np.int32), "resize_index"))
        b = ctx.gather(front, ctx.constant(second.astype(np.int32), "resize_index"))
        out = ctx.add(ctx.mul(a, ctx.constant((1 - lam).astype(dtype).reshape(column), "resize_weight")),
                      ctx.mul(b, ctx.constant(lam.astype(dtype).reshape(column), "resize_weight")))
    return ctx.transpose(out, perm=inverse)
