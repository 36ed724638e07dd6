"""Index arithmetic shared by the kernels: strides over symbolic dims and axis merging.

Kernels iterate over an index space (the output's shape) and address each operand through
its own strides (0 on broadcast axes). Adjacent axes that every operand walks contiguously
are merged, so that ``(batch, 7, 7, 64) + (64,)`` becomes a 2-level loop and
``(batch, 17) * (batch, 17)`` a single flat loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import dims
from graphc.ir.dims import Dim


def same(a: Dim, b: Dim) -> bool:
    """True when two dims are equal for every binding of their free dims (checked at probe points:
    the expressions are polynomials with floor divisions, so equal values at several large random
    points mean equal expressions in practice)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if dims.same(a, b):
        return True
    names = sorted(dims.symbols(a) | dims.symbols(b))
    for seed in (7919, 104729, 1299709):
        binding = {n: seed + 31 * i for i, n in enumerate(names)}
        if dims.evaluate(a, binding) != dims.evaluate(b, binding):
            return False
    return True


def contiguous_strides(shape: Sequence[Dim]) -> list[Dim]:
    """Row-major strides (in elements)."""
    strides: list[Dim] = [1] * len(shape)
    acc: Dim = 1
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = acc
        acc = dims.mul(acc, shape[i])
    return strides


def broadcast_strides(in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> list[Dim]:
    """Strides of a contiguous ``in_shape`` tensor read over ``out_shape`` (0 on broadcast axes)."""
    r = len(out_shape)
    pad = r - len(in_shape)
    full = [1] * pad + list(in_shape)
    base = contiguous_strides(full)
    out: list[Dim] = []
    for a in range(r):
        if full[a] == 1 and out_shape[a] != 1:
            out.append(0)
        else:
            out.append(base[a])
    return out


def merge_axes(shape: Sequence[Dim], strides: Sequence[Sequence[Dim]]) -> tuple[list[Dim], list[list[Dim]]]:
    """Drop unit axes and merge adjacent axes that every operand addresses contiguously.

    ``strides[i]`` are operand i's strides over ``shape``. Returns the merged shape and strides
    (at least one axis: a scalar becomes shape [1]).
    """
    keep = [a for a in range(len(shape)) if shape[a] != 1]
    shp = [shape[a] for a in keep]
    st = [[s[a] for a in keep] for s in strides]
    if not shp:
        return [1], [[0] for _ in strides]
    out_shape = [shp[-1]]
    out_strides = [[s[-1]] for s in st]
    for a in range(len(shp) - 2, -1, -1):
        inner_len = out_shape[0]
        mergeable = all(same(s[a], dims.mul(o[0], inner_len)) for s, o in zip(st, out_strides))
        if mergeable:
            out_shape[0] = dims.mul(shp[a], inner_len)
        else:
            out_shape.insert(0, shp[a])
            for s, o in zip(st, out_strides):
                o.insert(0, s[a])
    return out_shape, out_strides
