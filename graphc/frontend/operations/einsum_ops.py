"""``einsum`` of one or two operands, lowered to reductions, transposes, reshapes and one matmul.

With two operands each index is a batch index (in both operands and the output), a contracted
index (in both, not in the output), or belongs to one operand only; indices of one operand that
the output drops are summed first. The operands are transposed to (batch, free, contracted)
and (batch, contracted, free), their free and contracted groups flattened, multiplied with one
batched matmul, unflattened and transposed to the output's order. Ellipses and repeated
indices within one operand (diagonals) are refused.
"""

from __future__ import annotations

from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import NUMPY, Operation, apply, operands
from graphc.ir import dims
from graphc.ir.types import is_float
from graphc.ops.registry import ShapeError

__all__ = ["einsum"]


def parse(subscripts: str, count: int) -> tuple[list[str], str]:
    """The index letters of each operand and of the output (implicit output: the letters used once, sorted)."""
    text = subscripts.replace(" ", "")
    if "." in text:
        raise ShapeError(f"einsum {subscripts!r}: ellipses are not supported by graphc")
    inputs_text, arrow, output = text.partition("->")
    terms = inputs_text.split(",")
    if len(terms) != count:
        raise ShapeError(f"einsum {subscripts!r} names {len(terms)} operand(s), got {count}")
    if not arrow:
        letters = "".join(terms)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    for term in terms + [output]:
        if not all(c.isalpha() for c in term):
            raise ShapeError(f"einsum {subscripts!r}: indices are letters")
        if len(set(term)) != len(term):
            raise ShapeError(f"einsum {subscripts!r}: an index repeated within one term (a diagonal) is not "
                             "supported by graphc")
    for c in output:
        if not any(c in term for term in terms):
            raise ShapeError(f"einsum {subscripts!r}: output index {c!r} is in no operand")
    return terms, output


class Einsum(Operation):
    keras_module = NUMPY
    config_keys = ("subscripts",)

    def __init__(self, subscripts, *, name=None):
        super().__init__(name=name)
        if not isinstance(subscripts, str):
            raise TypeError(f"einsum subscripts must be a string, got {subscripts!r}")
        self.subscripts = subscripts

    def lower(self, ctx, inputs, **kwargs):
        xs = operands(ctx, *inputs)
        if not 1 <= len(xs) <= 2:
            raise ShapeError(f"einsum of {len(xs)} operands is not supported by graphc (one or two)")
        terms, output = parse(self.subscripts, len(xs))
        for x, term in zip(xs, terms):
            if ctx.rank(x) != len(term):
                raise ShapeError(f"einsum {self.subscripts!r}: operand {term!r} has shape {ctx.shape(x)}")
        others = [set("".join(terms[:i] + terms[i + 1:])) for i in range(len(terms))]
        parts = []
        for x, term, other in zip(xs, terms, others):  # sum the indices only this operand has and the output drops
            drop = [i for i, c in enumerate(term) if c not in output and c not in other]
            if drop:
                x = ctx.reduce_sum(x, axes=tuple(drop), keepdims=False)
                term = "".join(c for i, c in enumerate(term) if i not in drop)
            parts.append((x, term))
        if len(parts) == 1:
            x, term = parts[0]
            return _arrange(ctx, x, term, output)
        (a, ta), (b, tb) = parts
        if not is_float(ctx.dtype(a)):
            raise ShapeError(f"einsum of {ctx.dtype(a)} tensors is not supported by graphc (float only)")
        return _product(ctx, a, ta, b, tb, output)


def _arrange(ctx: LowerContext, x: str, term: str, output: str) -> str:
    """``x`` (indexed by ``term``) with its axes in ``output``'s order."""
    perm = tuple(term.index(c) for c in output)
    return ctx.transpose(x, perm=perm) if perm != tuple(range(len(perm))) else ctx.identity(x)


def _product(ctx: LowerContext, a: str, ta: str, b: str, tb: str, output: str) -> str:
    batch = [c for c in output if c in ta and c in tb]
    contracted = [c for c in ta if c in tb and c not in output]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    sizes = {c: d for c, d in zip(ta, ctx.shape(a))}
    for c, d in zip(tb, ctx.shape(b)):
        if c in sizes and c not in batch and not dims.compatible(sizes[c], d):
            raise ShapeError(f"einsum: index {c!r} has sizes {sizes[c]} and {d}")
        sizes.setdefault(c, d)

    a = _permuted(ctx, a, ta, batch + left + contracted)
    b = _permuted(ctx, b, tb, batch + contracted + right)
    a = _grouped(ctx, a, len(batch), [left, contracted], sizes)
    b = _grouped(ctx, b, len(batch), [contracted, right], sizes)
    y = ctx.matmul(a, b)
    batch_shape = ctx.shape(y)[:len(batch)]
    free = left + right
    if len(left) != 1 or len(right) != 1:
        y = ctx.reshape(y, shape=tuple(batch_shape) + tuple(sizes[c] for c in free))
    return _arrange(ctx, y, "".join(batch + free), output)


def _permuted(ctx: LowerContext, x: str, term: str, order: list[str]) -> str:
    perm = tuple(term.index(c) for c in order)
    return ctx.transpose(x, perm=perm) if perm != tuple(range(len(perm))) else x


def _grouped(ctx: LowerContext, x: str, n_batch: int, groups: list[list[str]], sizes: dict) -> str:
    """``x`` with its axes after the batch axes flattened into one axis per group (an empty group: size 1)."""
    if all(len(g) == 1 for g in groups):
        return x
    shape = tuple(ctx.shape(x)[:n_batch]) + tuple(dims.product([sizes[c] for c in g]) if g else 1 for g in groups)
    return ctx.reshape(x, shape=shape)


def einsum(subscripts, *operands_):
    return apply(Einsum, operands_, {"subscripts": subscripts})
