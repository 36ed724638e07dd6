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
    the expressions are polynomials with floor divisions, so equal values at several points mean
    equal expressions in practice). The probes include free dims of 1 (alone and together), where
    broadcasting makes strides that agree at large sizes differ, and the other small sizes."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if dims.same(a, b):
        return True
    names = sorted(dims.symbols(a) | dims.symbols(b))
    return all(dims.evaluate(a, binding) == dims.evaluate(b, binding) for binding in _probes(names))


def _probes(names: list[str]) -> list[dict[str, int]]:
    large = [{n: seed + 31 * i for i, n in enumerate(names)} for seed in (7919, 104729, 1299709)]
    small = [{n: v for n in names} for v in (1, 2, 3)]
    one_is_1 = [{**large[0], n: 1} for n in names]
    one_is_large = [{**small[0], n: large[1][n]} for n in names]
    return large + small + one_is_1 + one_is_large


def contiguous_strides(shape: Sequence[Dim]) -> list[Dim]:
    """Row-major strides (in elements)."""
    strides: list[Dim] = [1] * len(shape)
    acc: Dim = 1
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = acc
        acc = dims.mul(acc, shape[i])
    return strides


def strides_of(t) -> list[Dim]:
    """Strides (in elements) of tensor ``t`` (a builder ``Tensor``): row-major, its rows
    ``t.row_stride`` apart where it has strided rows."""
    if t.row_stride is None:
        return contiguous_strides(t.shape)
    outer = contiguous_strides(t.shape[:-1])
    return [dims.mul(st, t.row_stride) for st in outer] + [1]


def broadcast_strides(in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> list[Dim]:
    """Strides of a contiguous ``in_shape`` tensor read over ``out_shape`` (0 on broadcast axes).

    A free input dim that is not the output's dim may be 1 at run time (``(batch, 7)`` read over
    ``(3, 7)``, or ``(a, 7)`` over ``(max(a, b), 7)``): its stride is :func:`broadcast_stride`,
    which is 0 exactly when the dim is 1. A free dim equal to the output's needs no such care (the
    index along it is 0 whenever it is 1).
    """
    r = len(out_shape)
    pad = r - len(in_shape)
    full = [1] * pad + list(in_shape)
    base = contiguous_strides(full)
    out: list[Dim] = []
    for a in range(r):
        if full[a] == 1 and out_shape[a] != 1:
            out.append(0)
        elif runtime_broadcast(full[a], out_shape[a]):
            out.append(broadcast_stride(full[a], base[a]))
        else:
            out.append(base[a])
    return out


def runtime_broadcast(d: Dim, out_d: Dim) -> bool:
    """True when an input dim ``d`` read over output dim ``out_d`` may or may not be broadcast
    depending on the free dims' values: ``d`` is free and not known to equal ``out_d``."""
    return not isinstance(d, int) and not same(d, out_d)


def broadcast_stride(d: Dim, stride: Dim) -> Dim:
    """``stride`` where ``d`` is not 1 at run time, else 0: ``stride * (1 - max(2 - d, 0))``
    (sizes are at least 1), an expression the kernels evaluate once per launch."""
    d = str(d) if str(d).isidentifier() else f"({d})"
    return dims.mul(stride, f"1 - max(2 - {d}, 0)")


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
