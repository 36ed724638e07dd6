"""Vectorized float math in LLVM IR: exp, expm1, tanh, sigmoid and friends.

Every function takes an ``ir.IRBuilder``, the module (for intrinsic declarations) and a value
of float or vector-of-float type, and returns a value of the same type.

- ``exp``: Cody–Waite range reduction ``x = n ln2 + r`` (|r| <= ln2/2, ln2 split in two
  parts), a degree-6 Taylor polynomial for ``e^r`` (truncation error below 2e-7 relative),
  and ``2^n`` built in the exponent bits. Inputs above 88.72 give +inf, below -87.33 give 0.
- ``expm1``: a degree-8 Taylor polynomial for |x| < 0.5 (no cancellation), ``exp(x) - 1`` else.
- ``tanh``: an odd Taylor polynomial up to x^13 for |x| < 0.55, ``1 - 2 / (e^{2|x|} + 1)``
  with the sign restored else (no cancellation in either branch).
- ``sigmoid``: ``1 / (1 + e^{-x})``.
- Rarely used functions (log, log1p, erf, pow) call the C library per lane.
"""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.backends.llvm.irutil import F32, I32, intrinsic, vsuffix

LN2_HI = 0.693145751953125
LN2_LO = 1.428606765330187e-06
LOG2E = 1.4426950408889634
EXP_HI = 88.72283
EXP_LO = -87.33654


def const(t: ir.Type, value: float) -> ir.Constant:
    """A float constant of type ``t`` (splat for vectors)."""
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, float(value))] * t.count)
    return ir.Constant(t, float(value))


def _int_type(t: ir.Type) -> ir.Type:
    return ir.VectorType(I32, t.count) if isinstance(t, ir.VectorType) else I32


def call(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Call overloaded intrinsic ``llvm.<name>.<type>`` on same-typed float args."""
    t = args[0].type
    fn = intrinsic(b.module, f"llvm.{name}.{vsuffix(t)}", t, [t] * len(args))
    return b.call(fn, list(args))


def fma(b, a, x, c):
    """a * x + c: one fused instruction where the target has FMA, a multiply and an add elsewhere."""
    return call(b, "fmuladd", a, x, c)


def poly(b, x, coeffs):
    """sum(coeffs[i] * x^i) by Horner's rule with FMAs."""
    t = x.type
    acc = const(t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = fma(b, acc, x, const(t, c))
    return acc


def select_lt(b, x, bound, if_less, other):
    return b.select(b.fcmp_ordered("<", x, const(x.type, bound)), if_less, other)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    t = x.type
    xc = b.select(b.fcmp_ordered(">", x, const(t, 88.3)), const(t, 88.3), x)
    xc = b.select(b.fcmp_ordered("<", xc, const(t, -87.3)), const(t, -87.3), xc)
    n = call(b, "rint", b.fmul(xc, const(t, LOG2E)))
    r = fma(b, n, const(t, -LN2_HI), xc)
    r = fma(b, n, const(t, -LN2_LO), r)
    p = poly(b, r, [1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720])
    it = _int_type(t)
    ni = b.fptosi(n, it)
    bits = b.shl(b.add(ni, ir.Constant(it, [ir.Constant(I32, 127)] * t.count) if isinstance(t, ir.VectorType)
                       else ir.Constant(I32, 127)),
                 ir.Constant(it, [ir.Constant(I32, 23)] * t.count) if isinstance(t, ir.VectorType)
                 else ir.Constant(I32, 23))
    y = b.fmul(p, b.bitcast(bits, t))
    y = b.select(b.fcmp_ordered(">", x, const(t, EXP_HI)), const(t, math.inf), y)
    return b.select(b.fcmp_ordered("<", x, const(t, EXP_LO)), const(t, 0.0), y)


def expm1(b, x):
    t = x.type
    small = poly(b, x, [0.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320])
    big = b.fsub(exp(b, x), const(t, 1.0))
    ax = call(b, "fabs", x)
    return b.select(b.fcmp_ordered("<", ax, const(t, 0.5)), small, big)


_TANH = [1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925, 21844 / 6081075]


def tanh(b, x):
    t = x.type
    ax = call(b, "fabs", x)
    x2 = b.fmul(x, x)
    small = b.fmul(x, poly(b, x2, _TANH))
    e = exp(b, b.fmul(ax, const(t, 2.0)))
    big = b.fsub(const(t, 1.0), b.fdiv(const(t, 2.0), b.fadd(e, const(t, 1.0))))
    big = call(b, "copysign", big, x)
    return b.select(b.fcmp_ordered("<", ax, const(t, 0.55)), small, big)


def sigmoid(b, x):
    t = x.type
    e = exp(b, b.fneg(x))
    return b.fdiv(const(t, 1.0), b.fadd(const(t, 1.0), e))


def libm(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Apply the C library's float function ``name`` (``logf``...) lane by lane."""
    t = args[0].type
    fn = intrinsic(b.module, name, F32, [F32] * len(args))
    if not isinstance(t, ir.VectorType):
        return b.call(fn, list(args))
    out = ir.Constant(t, ir.Undefined)
    for i in range(t.count):
        lane = [b.extract_element(a, ir.Constant(I32, i)) for a in args]
        out = b.insert_element(out, b.call(fn, lane), ir.Constant(I32, i))
    return out


def maximum(b, x, y):
    """max(x, y) propagating NaN like NumPy."""
    return call(b, "maximum", x, y)


def minimum(b, x, y):
    return call(b, "minimum", x, y)
