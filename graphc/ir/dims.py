"""Symbolic dimensions.

A dimension is either a concrete ``int`` or a ``str``: the name of a free dimension
(``"batch"``, ``"text_len"``) or an integer expression over such names
(``"(text_len - 4) // 2 + 1"``). Expressions are plain Python integer arithmetic so
that any backend can evaluate them once the free dimensions are bound at run time.

Every expression the helpers build is in the normal form of ``dim_algebra``: the same size reached
along two roads is written alike, so types that are equal compare equal as written. That is not a
proof of inequality: two different normal forms may still be equal for every binding.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

from graphc.ir.dim_algebra import normalize

Dim = int | str

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load,
    ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.USub, ast.Call,
)


def is_static(d: Dim) -> bool:
    """True for a concrete dimension."""
    return isinstance(d, int)


def symbols(d: Dim) -> set[str]:
    """The free-dimension names a dimension depends on."""
    if isinstance(d, int):
        return set()
    return set(_IDENT.findall(d)) - {"max"}


def _wrap(d: Dim) -> str:
    s = str(d)
    return s if isinstance(d, int) or _IDENT.fullmatch(s) else f"({s})"


def _normal(d: Dim) -> Dim:
    """``d`` in normal form (a result returned without arithmetic is normalized as every other)."""
    return d if isinstance(d, int) else normalize(d)


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if b == 0:
        return _normal(a)
    if a == 0:
        return _normal(b)
    return normalize(f"{_wrap(a)} + {_wrap(b)}")


def sub(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    if b == 0:
        return _normal(a)
    return normalize(f"{_wrap(a)} - {_wrap(b)}")


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1:
        return _normal(b)
    if b == 1:
        return _normal(a)
    if a == 0 or b == 0:
        return 0
    return normalize(f"{_wrap(a)}*{_wrap(b)}")


def floordiv(a: Dim, b: Dim) -> Dim:
    """``a // b``; a divisor that is an expression is parenthesized (``x // (w + 1) // 2`` would divide by
    ``w + 1`` and then by 2)."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    if b == 1:
        return _normal(a)
    return normalize(f"{_wrap(a)} // {_wrap(b)}")


def ceildiv(a: Dim, b: Dim) -> Dim:
    """``ceil(a / b)`` for positive ``b``."""
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    if b == 1:
        return _normal(a)
    return normalize(f"({_wrap(a)} + {_wrap(sub(b, 1))}) // {_wrap(b)}")


def maximum(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return normalize(f"max({a}, {b})")


def minimum(a: Dim, b: Dim) -> Dim:
    """``min(a, b)``, spelled ``-max(-a, -b)`` (``max`` is the one function dims expressions have; the
    spelling holds each argument once, so that nested minima do not double in length)."""
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return normalize(f"-max(-({a}), -({b}))")


def product(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def _check_expression(d: str) -> ast.Expression:
    """Parse ``d``, refusing anything but integer arithmetic on names and ``max(...)``."""
    try:
        tree = ast.parse(d, mode="eval")
    except SyntaxError:
        raise ValueError(f"not a dimension expression: {d!r}") from None
    for node in ast.walk(tree):
        bad = not isinstance(node, _ALLOWED_NODES) \
            or (isinstance(node, ast.Constant) and type(node.value) is not int) \
            or (isinstance(node, ast.Call)
                and (not isinstance(node.func, ast.Name) or node.func.id != "max" or node.keywords))
        if bad:
            raise ValueError(f"not a dimension expression: {d!r}")
    return tree


def evaluate(d: Dim, bindings: Mapping[str, int]) -> int:
    """The value of ``d`` once its free dimensions are bound.

    Raises KeyError naming a free dimension that ``bindings`` lacks, ValueError for a string
    that is not a dimension expression.
    """
    if isinstance(d, int):
        return d
    tree = _check_expression(d)
    missing = symbols(d) - set(bindings)
    if missing:
        raise KeyError(f"free dimension(s) {sorted(missing)} of {d!r} are not bound")
    return int(eval(compile(tree, "<dim>", "eval"), {"__builtins__": {}, "max": max}, dict(bindings)))


def same(a: Dim, b: Dim) -> bool:
    """True when ``a`` and ``b`` are known to be equal: they have one normal form."""
    if a == b:
        return True
    if isinstance(a, int) and isinstance(b, int):
        return False
    try:
        return normalize(str(a)) == normalize(str(b))
    except ValueError:
        return False


def compatible(a: Dim, b: Dim) -> bool:
    """False only when both are concrete and differ."""
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


def unify(a: Dim, b: Dim) -> Dim:
    """The more concrete of two dimensions that must be equal (caller checks compatibility)."""
    return a if isinstance(a, int) else b if isinstance(b, int) else a
