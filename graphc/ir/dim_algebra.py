"""One written form for every dimension expression.

Shape inference builds the same size along different roads: a 'same' convolution of stride 2 after
another gives ``((d + 1) // 2 + 1) // 2`` on one road and ``((((d + 1) // 2) + 1) - 1) // 2 + 1`` on
another. Passes compare types as they are written (a fusion needs its residual's type to be its
output's), so equal sizes must be written alike. ``normalize`` rewrites an expression into a
canonical form:

- a sum of monomials with integer coefficients, products expanded, like terms merged, terms in one
  order (by their text), the constant last;
- ``p // k`` for a positive constant ``k`` takes the multiples of ``k`` out of ``p``
  (``(n + 4) // 2`` is ``n // 2 + 2``), divides ``p`` and ``k`` by their common factor
  (``(2n + 2) // 4`` is ``(n + 1) // 2``), and merges nested divisions:
  ``(q // j + r) // k`` is ``(q + r*j) // (j*k)`` for any integers q, r and positive j, k;
- ``p // m`` for a monomial ``m`` that divides every term of ``p`` is the quotient;
- ``max`` of arguments that differ by a constant is the larger; otherwise its arguments are
  flattened, deduplicated and sorted.

Every rewrite is an identity of Python's integer arithmetic (floor division), so the normal form
evaluates as the expression did wherever the expression could be evaluated. Two expressions with
the same normal form are equal; different normal forms do not prove them different.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from functools import lru_cache

Monomial = tuple["Atom", ...]  # atoms multiplied, sorted by text; () is the constant
Poly = dict[Monomial, int]


@dataclass(frozen=True)
class Atom:
    """A factor that is not a sum: a free dimension's name, a floor division, or a max."""
    text: str
    kind: str = "name"  # "name" | "div" | "max"
    num: tuple = field(default=(), compare=False, hash=False)  # a division's numerator, as Poly items
    den: int = field(default=0, compare=False, hash=False)  # a constant divisor (0: the divisor is not one)
    args: tuple = field(default=(), compare=False, hash=False)  # a max's arguments, each as Poly items


def normalize(text: str) -> int | str:
    """The normal form of a dimension expression: an int when it is constant."""
    return _normalize(text.strip())


@lru_cache(maxsize=16384)
def _normalize(text: str) -> int | str:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"not a dimension expression: {text!r}") from None
    poly = _poly(tree.body)
    return _constant(poly) if _is_constant(poly) else _text(poly)


# ---------------------------------------------------------------------------------------------
# Polynomials

def _is_constant(p: Poly) -> bool:
    return all(m == () for m in p)


def _constant(p: Poly) -> int:
    return p.get((), 0)


def _clean(p: Poly) -> Poly:
    return {m: c for m, c in p.items() if c != 0}


def _plus(a: Poly, b: Poly, scale: int = 1) -> Poly:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0) + scale * c
    return _clean(out)


def _times(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb, key=lambda atom: atom.text))
            out[m] = out.get(m, 0) + ca * cb
    return _clean(out)


def _scaled(p: Poly, k: int) -> Poly:
    return _clean({m: c * k for m, c in p.items()})


def _atom_poly(atom: Atom) -> Poly:
    return {(atom,): 1}


def _poly(node: ast.AST) -> Poly:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return _clean({(): node.value})
    if isinstance(node, ast.Name):
        return _atom_poly(Atom(node.id))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _scaled(_poly(node.operand), -1)
    if isinstance(node, ast.BinOp):
        a, b = _poly(node.left), _poly(node.right)
        if isinstance(node.op, ast.Add):
            return _plus(a, b)
        if isinstance(node.op, ast.Sub):
            return _plus(a, b, -1)
        if isinstance(node.op, ast.Mult):
            return _times(a, b)
        if isinstance(node.op, ast.FloorDiv):
            return _floordiv(a, b)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "max" \
            and node.args and not node.keywords:
        return _maximum([_poly(arg) for arg in node.args])
    raise ValueError(f"not a dimension expression: {ast.unparse(node)!r}")


def _floordiv(a: Poly, b: Poly) -> Poly:
    if _is_constant(b) and _constant(b) > 0:
        return _divide_by_constant(a, _constant(b))
    if _is_constant(a) and _constant(a) == 0 and not _is_constant(b):
        return {}
    if len(b) == 1 and not _is_constant(b):
        (mb, cb), = b.items()
        quotient = _divide_by_monomial(a, mb) if cb == 1 else None
        if quotient is not None:
            return quotient
    return _atom_poly(Atom(f"{_wrap(a)} // {_wrap(b)}", "div"))


def _divide_by_monomial(p: Poly, m: Monomial) -> Poly | None:
    """``p / m`` when ``m`` divides every term of ``p`` (then floor division is exact), else None."""
    out: Poly = {}
    for mp, c in p.items():
        rest = list(mp)
        for atom in m:
            if atom not in rest:
                return None
            rest.remove(atom)
        out[tuple(rest)] = c
    return out


def _divide_by_constant(p: Poly, k: int) -> Poly:
    if k == 1:
        return p
    quotient: Poly = {}
    remainder: Poly = {}
    for m, c in p.items():
        q, r = divmod(c, k)
        quotient[m], remainder[m] = q, r
    quotient, remainder = _clean(quotient), _clean(remainder)
    if _is_constant(remainder):  # 0 <= remainder < k
        return quotient
    nested = sorted((m[0] for m, c in remainder.items() if len(m) == 1 and c == 1 and m[0].den), key=lambda a: a.text)
    if nested:  # (q // j + r) // k == (q + r*j) // (j*k)
        inner = nested[0]
        rest = _plus(remainder, _atom_poly(inner), -1)
        merged = _plus(dict(inner.num), _scaled(rest, inner.den))
        return _plus(quotient, _divide_by_constant(merged, inner.den * k))
    g = math.gcd(k, *remainder.values())
    if g > 1:
        remainder, k = {m: c // g for m, c in remainder.items()}, k // g
    atom = Atom(f"{_wrap(remainder)} // {k}", "div", tuple(remainder.items()), k)
    return _plus(quotient, _atom_poly(atom))


def _maximum(args: list[Poly]) -> Poly:
    kept: list[Poly] = []
    for arg in args:
        for a in _max_args(arg):
            for i, b in enumerate(kept):
                diff = _plus(a, b, -1)
                if _is_constant(diff):
                    if _constant(diff) > 0:
                        kept[i] = a
                    break
            else:
                kept.append(a)
    # absorption: an argument that is a min of something no larger than another argument is never the max
    # (``max(x, min(x, y))`` is x: ``dims.minimum(x, dims.maximum(x, 1))`` comes out as x)
    i = 0
    while len(kept) > 1 and i < len(kept):
        if any(_never_above(kept[i], b) for j, b in enumerate(kept) if j != i):
            del kept[i]
        else:
            i += 1
    if len(kept) == 1:
        return kept[0]
    kept.sort(key=lambda a: (_is_constant(a), _text(a)))
    text = _text(kept[-1])
    for a in reversed(kept[:-1]):
        text = f"max({_text(a)}, {text})"
    return _atom_poly(Atom(text, "max", args=tuple(tuple(a.items()) for a in kept)))


def _never_above(a: Poly, b: Poly) -> bool:
    """Whether ``a <= b`` whatever the names' values, seen from their forms: ``a`` is ``-max(q, ...)`` (a min
    of the ``-q``) and some ``-q`` is ``b`` or ``b`` less a non-negative constant."""
    if len(a) != 1:
        return False
    (m, c), = a.items()
    if c != -1 or len(m) != 1 or m[0].kind != "max":
        return False
    for q in m[0].args:
        diff = _plus(_scaled(dict(q), -1), b, -1)  # -q - b
        if _is_constant(diff) and _constant(diff) <= 0:
            return True
    return False


def _max_args(p: Poly) -> list[Poly]:
    """The arguments of a max that ``p`` is (flattened), or ``[p]``."""
    if len(p) == 1:
        (m, c), = p.items()
        if c == 1 and len(m) == 1 and m[0].kind == "max":
            return [dict(items) for items in m[0].args]
    return [p]


# ---------------------------------------------------------------------------------------------
# Text

def _wrap(p: Poly) -> str:
    s = _text(p)
    if len(p) == 1:
        (m, c), = p.items()
        if (m == () and c >= 0) or (c == 1 and len(m) == 1 and m[0].kind in ("name", "max")):
            return s
    return f"({s})"


def _factor(atom: Atom) -> str:
    return f"({atom.text})" if atom.kind == "div" else atom.text


def _term(m: Monomial, c: int) -> str:
    """``|c| * m`` written out (the sign is the caller's)."""
    c = abs(c)
    if m == ():
        return str(c)
    if c == 1 and len(m) == 1:
        return m[0].text
    factors = [_factor(a) for a in m]
    return "*".join(factors if c == 1 else [str(c), *factors])


def _text(p: Poly) -> str:
    if not p:
        return "0"
    # positive terms, then negative ones, each by text, then the constant; "5 - n", not "-n + 5"
    terms = sorted((m for m in p if m != ()), key=lambda m: (p[m] < 0, "*".join(a.text for a in m), len(m)))
    if () in p:
        constant_first = p[()] > 0 and (not terms or p[terms[0]] < 0)
        terms.insert(0 if constant_first else len(terms), ())
    out = ""
    for i, m in enumerate(terms):
        c = p[m]
        body = _term(m, c)
        if i == 0:
            lone_div = c == -1 and len(m) == 1 and m[0].kind == "div"
            out = f"-({m[0].text})" if lone_div else f"-{body}" if c < 0 else body
        else:
            out += f" - {body}" if c < 0 else f" + {body}"
    return out
