"""Shape-rule helpers shared by the op families (broadcasting, axes, dtype checks)."""

from __future__ import annotations

from graphc.ir import dims
from graphc.ir.dims import Dim
from graphc.ir.types import TensorType, is_float
from graphc.ops.registry import ShapeError


def fmt_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """NumPy broadcasting over possibly symbolic dims (symbols are assumed compatible).

    A free dim may be 1 at run time: against a fixed dim the result is the fixed dim, against
    another free dim it is their maximum (``max(a, b)``), which is each of them broadcast or not.
    """
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dim: Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif not dims.compatible(dim, d):
                raise ShapeError("shapes " + " and ".join(fmt_shape(s) for s in shapes)
                                 + " cannot be broadcast together")
            elif isinstance(dim, int) or isinstance(d, int) or dims.same(dim, d):
                dim = dims.unify(dim, d)
            else:
                dim = dims.maximum(dim, d)
        out.append(dim)
    return tuple(out)


def same_dtype(types: list[TensorType], what: str = "inputs") -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise ShapeError(f"{what} have different dtypes {sorted(dtypes)}")
    return dtypes.pop()


def require_float(t: TensorType, what: str = "input") -> None:
    if not is_float(t.dtype):
        raise ShapeError(f"{what} must be a float tensor, got {t.dtype}")


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def require_rank(t: TensorType, rank: int | tuple[int, ...], what: str = "input") -> None:
    ranks = (rank,) if isinstance(rank, int) else rank
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{what} must have rank {want}, got shape {fmt_shape(t.shape)}")
