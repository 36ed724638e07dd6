"""Vectorized float math in LLVM IR: exp, log, log1p, erf, pow, tanh and friends.

Every function takes an ``ir.IRBuilder`` and a value of float or vector-of-float type and returns
a value of the same type, so one formula serves a kernel's ``<N x float>`` body and its scalar
remainder. Nothing calls the C library per lane; special values (±0, ±inf, NaN, subnormal
arguments) give what NumPy's float32 functions give, and so do subnormal results except where
``exp`` flushes them (below). Polynomial coefficients are near-minimax fits of the
reduced function (relative error, coefficients rounded to float32 one at a time with the rest
refitted); errors below are against the exact function, before float32 evaluation rounding.

- ``exp``: Cody–Waite reduction ``x = n ln2 + r`` (ln2 split in two parts, n rounded by a
  magic-number addition and capped at 127 so that ``2^n`` built in the exponent bits stays
  finite: r in [-ln2/2, ln2]), ``e^r = 1 + r + r^2 Q(r)`` with Q of degree 5 (2e-9 relative).
  Inputs above 88.72 give +inf; results below the smallest normal float32 (x < -87.34) are
  flushed to 0, as vectorized libraries do: subnormal results would cost a fifth of the speed
  (two scale factors), and feed slow subnormal arithmetic downstream.
- ``log``: ``x = 2^e m`` with m in [sqrt(1/2), sqrt(2)) (subnormals scaled by 2^23 first), so
  ``f = m - 1`` is exact and ``log(1+f) = f - f^2/2 + f^3 P(f)``, P of degree 7 (6e-9 relative);
  ``e ln2`` added in two parts, the exact high part last.
- ``log1p``: the same reduction applied to ``u = 1 + x``, plus ``c / u`` where ``c = x - (u - 1)``
  is the rounding error of ``u`` (exact), so small arguments keep their full precision.
- ``erf``: ``|x| + |x| Q(x^2)`` below 0.875 (Q of degree 6, 9e-10 relative),
  ``1 - exp(R(|x|))`` up to 3.925 with R of degree 8 fitting ``log(erfc)`` (error below 1e-10
  of erf; R stays within [-17.4, -1.5], so the exponential needs none of its special cases), 1 beyond
  (where erf rounds to 1 in float32); the sign restored last.
- ``pow``: ``exp(y log|x|)`` evaluated in double precision (float32 arguments have no error
  there: a log good to 1e-12 relative and an exp good to 1e-11 give results correct to within
  rounding after the final rounding to float32, even where ``y log|x|`` is near 100), with C99's
  (NumPy's) special cases: ``pow(x, 0) = pow(1, y) = 1`` even for NaN, a negative base gives a sign
  for odd integer exponents and NaN for non-integer ones, zeros and infinities per Annex F.
- ``expm1``: ``x + x^2 Q(x)`` (Taylor to x^8) for |x| < 0.5 (no cancellation), ``exp(x) - 1`` else.
- ``tanh``: ``x + x^3 P(x^2)`` for |x| < 0.625 (P of degree 4, 5e-9 relative),
  ``1 - 2 / (e^{2|x|} + 1)`` with the sign restored else (no cancellation in either branch).
- ``sigmoid``: ``1 / (1 + e^{-x})`` (2.5 ulp; 0 below -88.38, where it is under 4e-39), with ``exp``'s
  reduction but none of its special cases (``_exp_negated``); ``silu``: ``x / (1 + e^{-x})``.

Float64 values (rare in kernels) go to the C library's double functions lane by lane (``libm``).
"""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.backends.llvm.irutil import F64, I32, I64, constant, intrinsic, vsuffix

LN2_HI = 0.693145751953125  # 15 significant bits: n * LN2_HI is exact for |n| < 2^9
LN2_LO = 1.428606765330187e-06
LOG2E = 1.4426950408889634
EXP_HI = 88.72284  # above: +inf (float32 max is e^88.7228)
EXP_LO = -87.33654  # below: 0 (e^x under the smallest normal float32, flushed)
SQRT_HALF_BITS = 0x3F3504F3  # float32 sqrt(1/2): subtracting it centres the mantissa on 1
MANTISSA = 0x7FFFFF
FLT_MIN = 1.1754943508222875e-38  # smallest normal float32
ROUNDING_MAGIC = 12582912.0  # 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer, kept in the low bits
ROUNDING_MAGIC_BITS = 0x4B400000
ROUNDING_MAGIC64 = 6755399441055744.0  # 1.5 * 2^52, the same for doubles
ROUNDING_MAGIC64_BITS = 0x4338000000000000
SIGMOID_LO = -88.75  # from -88.38 down: e^{-x} = +inf (n = 128), sigmoid 0
SIGMOID_HI = 87.0  # above: e^{-x} = e^{-87} (n = -126, still normal), 1 + e^{-x} = 1
ERF_SPLIT = 0.875
TANH_SPLIT = 0.625
ERF_ONE = 3.925  # erf(x) rounds to 1 in float32 from 3.9192 on

# e^r = 1 + r + r^2 Q(r), -ln2/2 <= r <= ln2
_EXP_Q = [0.4999999403953552, 0.16666696965694427, 0.041668180376291275, 0.008326925337314606,
          0.0013833901612088084, 0.00023277221771422774]
# e^r = 1 + r + r^2 Q(r) on the half range |r| <= ln2/2, Q of degree 4 (3.3e-9 relative), as
# e^{-r'} for r' = -r: the odd coefficients negated
_EXP_HALF_Q = [0.4999999403953552, 0.166665181517601, 0.04166824370622635, 0.008368944749236107,
               0.0013822762994095683]
_EXP_NEGATED = [c * (-1) ** i for i, c in enumerate([1.0, 1.0, *_EXP_HALF_Q])]
# log(1+f) = f - f^2/2 + f^3 P(f), f in [sqrt(1/2) - 1, sqrt(2) - 1]
_LOG_P = [0.3333333134651184, -0.250008225440979, 0.20001250505447388, -0.16623316705226898,
          0.14201268553733826, -0.13160160183906555, 0.12764813005924225, -0.07638368755578995]
# erf(x) = x + x Q(x^2), |x| <= 0.875
_ERF_SMALL = [0.12837916612625122, -0.3761262893676758, 0.11283621937036514, -0.026855284348130226,
              0.005190647207200527, -0.0008021955145522952, 7.843718776712194e-05]
# log(erfc(t)) = R(t), 0.875 <= t <= 3.93
# tanh(x) = x + x^3 P(x^2), |x| <= 0.625
_TANH_P = [-0.3333328068256378, 0.1333140879869461, -0.05373691767454147, 0.02062983624637127,
           -0.005694468040019274]
_ERF_LOG_ERFC = [0.00013832587865181267, -1.1293151378631592, -0.6338183879852295, -0.10765639692544937,
                 0.0246138758957386, -0.003914063796401024, 0.0003544815117493272, -7.167689091147622e-06,
                 -1.038688310472935e-06]
# double precision, for pow: log(1+f) = 2 atanh(s), s = f / (2 + f), |s| <= 0.1716 (series to s^15:
# 1e-12 relative), and e^r by Taylor to r^9 for |r| <= ln2/2 (1e-11 relative)
_ATANH = [2.0 / (2 * k + 1) for k in range(1, 8)]
_EXP_TAYLOR = [1.0 / math.factorial(k) for k in range(10)]


def const(t: ir.Type, value: float) -> ir.Constant:
    """A float constant of type ``t`` (splat for vectors)."""
    return constant(t, float(value))


def _shaped(t: ir.Type, element: ir.Type) -> ir.Type:
    """``element``, or a vector of it with as many lanes as ``t``."""
    return ir.VectorType(element, t.count) if isinstance(t, ir.VectorType) else element


def _int_type(t: ir.Type) -> ir.Type:
    return _shaped(t, I32)


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


def _is_nan(b, x):
    return b.fcmp_unordered("uno", x, x)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    t = x.type
    xc = b.select(b.fcmp_ordered(">", x, const(t, EXP_HI)), const(t, EXP_HI), x)
    xc = b.select(b.fcmp_ordered("<", xc, const(t, EXP_LO)), const(t, EXP_LO), xc)
    # n = round(x / ln2) by the magic-number addition, whose low bits hold n as an integer too (no
    # conversion instruction, no poison from converting NaN); n <= 127 keeps 2^n finite, r up to ln2
    shifted = fma(b, xc, const(t, LOG2E), const(t, ROUNDING_MAGIC))
    top = const(t, ROUNDING_MAGIC + 127)
    shifted = b.select(b.fcmp_ordered(">", shifted, top), top, shifted)
    y = _exp_scaled(b, xc, shifted)
    y = b.select(b.fcmp_ordered(">", x, const(t, EXP_HI)), const(t, math.inf), y)
    return b.select(b.fcmp_ordered("<", x, const(t, EXP_LO)), const(t, 0.0), y)


def _exp_scaled(b, x, shifted):
    """e^x from ``shifted`` = x / ln2 + the rounding magic (n = round(x / ln2) in its low bits):
    ``2^n e^r``, 2^n built in the exponent bits, so n must lie in [-126, 127]."""
    t = x.type
    n = b.fsub(shifted, const(t, ROUNDING_MAGIC))
    r = fma(b, n, const(t, -LN2_HI), x)
    r = fma(b, n, const(t, -LN2_LO), r)
    return b.fmul(poly(b, r, [1.0, 1.0, *_EXP_Q]), _pow2_of_shifted(b, shifted))


def _pow2_of_shifted(b, shifted):
    """2^n as a float32, built in the exponent bits from ``shifted`` (n + the rounding magic, n in its
    low bits): n + 127 shifted into place."""
    t = shifted.type
    it = _int_type(t)
    biased = b.sub(b.bitcast(shifted, it), constant(it, ROUNDING_MAGIC_BITS - 127))  # n + 127
    return b.bitcast(b.shl(biased, constant(it, 23)), t)


def _exp_in_range(b, x):
    """e^x for x whose result is a normal float32 (EXP_LO <= x <= 88): ``exp`` without its clamps and
    special cases, 10 instructions fewer. Lanes outside give some float (no poison: the integer
    steps are plain shifts and subtractions) for a caller that discards them."""
    return _exp_scaled(b, x, fma(b, x, const(x.type, LOG2E), const(x.type, ROUNDING_MAGIC)))


def _split_at_sqrt_half(b, bits, one_bits, mantissa, shift):
    """Integer bits of a positive float -> (exponent e, m) with value = 2^e m, m in [sqrt(1/2), sqrt(2))."""
    it = bits.type
    ix = b.sub(bits, constant(it, one_bits))
    e = b.ashr(ix, constant(it, shift))
    m_bits = b.add(b.and_(ix, constant(it, mantissa)), constant(it, one_bits))
    return e, m_bits


def _log1p_reduced(b, f):
    """log(1 + f) - f for f in [sqrt(1/2) - 1, sqrt(2) - 1]: f^3 P(f) - f^2 / 2."""
    t = f.type
    f2 = b.fmul(f, f)
    return fma(b, b.fmul(f2, f), poly(b, f, _LOG_P), b.fmul(f2, const(t, -0.5)))


def _add_exponent(b, e, f, rest):
    """e ln2 + f + rest, summed so that the large exact terms come last."""
    t = f.type
    lo = fma(b, e, const(t, LN2_LO), rest)
    return fma(b, e, const(t, LN2_HI), b.fadd(lo, f))


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    t = x.type
    it = _int_type(t)
    subnormal = b.fcmp_ordered("<", x, const(t, FLT_MIN))
    xs = b.select(subnormal, b.fmul(x, const(t, 2.0 ** 23)), x)
    e_int, m_bits = _split_at_sqrt_half(b, b.bitcast(xs, it), SQRT_HALF_BITS, MANTISSA, 23)
    e = b.fsub(b.sitofp(e_int, t), b.select(subnormal, const(t, 23.0), const(t, 0.0)))
    f = b.fsub(b.bitcast(m_bits, t), const(t, 1.0))
    y = _add_exponent(b, e, f, _log1p_reduced(b, f))
    y = b.select(b.fcmp_ordered("==", x, const(t, math.inf)), x, y)
    y = b.select(b.fcmp_ordered("==", x, const(t, 0.0)), const(t, -math.inf), y)
    y = b.select(b.fcmp_ordered("<", x, const(t, 0.0)), const(t, math.nan), y)
    return b.select(_is_nan(b, x), x, y)


def log1p(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    t = x.type
    it = _int_type(t)
    one = const(t, 1.0)
    u = b.fadd(x, one)
    rounding = b.fsub(x, b.fsub(u, one))  # exact: what 1 + x lost
    e_int, m_bits = _split_at_sqrt_half(b, b.bitcast(u, it), SQRT_HALF_BITS, MANTISSA, 23)
    e = b.sitofp(e_int, t)
    f = b.fsub(b.bitcast(m_bits, t), one)
    y = _add_exponent(b, e, f, b.fadd(_log1p_reduced(b, f), b.fdiv(rounding, u)))
    y = b.select(b.fcmp_ordered("==", x, const(t, math.inf)), x, y)
    y = b.select(b.fcmp_ordered("==", x, const(t, -1.0)), const(t, -math.inf), y)
    y = b.select(b.fcmp_ordered("<", x, const(t, -1.0)), const(t, math.nan), y)
    return b.select(b.fcmp_unordered("==", x, const(t, 0.0)), x, y)  # ±0 and NaN as given


def erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    t = x.type
    ax = call(b, "fabs", x)
    small = fma(b, ax, poly(b, b.fmul(x, x), _ERF_SMALL), ax)
    # R(|x|) is within [-17.4, -1.5] where the large branch is taken; other lanes are discarded
    large = b.fsub(const(t, 1.0), _exp_in_range(b, poly(b, ax, _ERF_LOG_ERFC)))
    y = b.select(b.fcmp_ordered("<", ax, const(t, ERF_SPLIT)), small, large)
    y = b.select(b.fcmp_ordered(">", ax, const(t, ERF_ONE)), const(t, 1.0), y)
    return call(b, "copysign", y, x)


def _log_abs_f64(b, x):
    """log|x| in double precision (to 1e-12 relative) for finite nonzero float32 ``x``.

    The reduction works on the float32 bits (subnormals scaled by 2^23 first), whose mantissa
    m in [sqrt(1/2), sqrt(2)) converts to double exactly; then ``log m = 2 atanh(s)``."""
    t = x.type
    it = _int_type(t)
    td = _shaped(t, F64)
    ax = call(b, "fabs", x)
    subnormal = b.fcmp_ordered("<", ax, const(t, FLT_MIN))
    xs = b.select(subnormal, b.fmul(ax, const(t, 2.0 ** 23)), ax)
    e_int, m_bits = _split_at_sqrt_half(b, b.bitcast(xs, it), SQRT_HALF_BITS, MANTISSA, 23)
    e = b.sub(e_int, b.select(subnormal, constant(it, 23), constant(it, 0)))
    f = b.fsub(b.fpext(b.bitcast(m_bits, t), td), const(td, 1.0))
    s = b.fdiv(f, b.fadd(f, const(td, 2.0)))
    s2 = b.fmul(s, s)
    log1p_f = fma(b, b.fmul(s, s2), poly(b, s2, _ATANH), b.fmul(s, const(td, 2.0)))
    return fma(b, b.sitofp(e, td), const(td, math.log(2.0)), log1p_f)


def _exp_f64(b, z):
    """e^z for doubles, to 1e-11 relative; z beyond ±200 (any float32 result is 0 or inf) is clamped."""
    t = z.type
    it = _shaped(t, I64)
    z = b.select(b.fcmp_ordered(">", z, const(t, 200.0)), const(t, 200.0), z)
    z = b.select(b.fcmp_ordered("<", z, const(t, -200.0)), const(t, -200.0), z)
    shifted = fma(b, z, const(t, LOG2E), const(t, ROUNDING_MAGIC64))
    n = b.fsub(shifted, const(t, ROUNDING_MAGIC64))
    r = fma(b, n, const(t, -math.log(2.0)), z)
    biased = b.sub(b.bitcast(shifted, it), constant(it, ROUNDING_MAGIC64_BITS - 1023))  # n + 1023
    return b.fmul(poly(b, r, _EXP_TAYLOR), b.bitcast(b.shl(biased, constant(it, 52)), t))


def pow(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    t = x.type
    td = _shaped(t, F64)
    ax = b.fpext(call(b, "fabs", x), td)
    log_ax = _log_abs_f64(b, x)
    log_ax = b.select(b.fcmp_ordered("==", ax, const(td, 0.0)), const(td, -math.inf), log_ax)
    log_ax = b.select(b.fcmp_unordered("==", ax, const(td, math.inf)), ax, log_ax)  # inf and NaN
    magnitude = b.fptrunc(_exp_f64(b, b.fmul(b.fpext(y, td), log_ax)), t)
    integer = b.fcmp_ordered("==", call(b, "rint", y), y)  # ±inf count as (even) integers
    half = b.fmul(y, const(t, 0.5))
    odd = b.and_(integer, b.fcmp_ordered("!=", call(b, "rint", half), half))
    negative_base = b.icmp_signed("<", b.bitcast(x, _int_type(t)), constant(_int_type(t), 0))  # -0 too
    out = b.select(b.and_(negative_base, odd), b.fneg(magnitude), magnitude)
    finite_negative = b.and_(b.fcmp_ordered("<", x, const(t, 0.0)), b.fcmp_ordered(">", x, const(t, -math.inf)))
    out = b.select(b.and_(finite_negative, b.not_(integer)), const(t, math.nan), out)
    minus_one_to_inf = b.and_(b.fcmp_ordered("==", x, const(t, -1.0)),
                              b.fcmp_ordered("==", call(b, "fabs", y), const(t, math.inf)))
    one = b.or_(b.or_(b.fcmp_ordered("==", y, const(t, 0.0)), b.fcmp_ordered("==", x, const(t, 1.0))),
                minus_one_to_inf)
    return b.select(one, const(t, 1.0), out)


_EXPM1_Q = [1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320]


def expm1(b, x):
    t = x.type
    small = call(b, "copysign", fma(b, b.fmul(x, x), poly(b, x, _EXPM1_Q), x), x)  # keeps -0
    big = b.fsub(exp(b, x), const(t, 1.0))
    ax = call(b, "fabs", x)
    return b.select(b.fcmp_ordered("<", ax, const(t, 0.5)), small, big)


def tanh(b, x):
    t = x.type
    ax = call(b, "fabs", x)
    x2 = b.fmul(x, x)
    small = fma(b, b.fmul(ax, x2), poly(b, x2, _TANH_P), ax)
    e = exp(b, b.fmul(ax, const(t, 2.0)))
    big = b.fsub(const(t, 1.0), b.fdiv(const(t, 2.0), b.fadd(e, const(t, 1.0))))
    return call(b, "copysign", b.select(b.fcmp_ordered("<", ax, const(t, TANH_SPLIT)), small, big), x)


def _exp_negated(b, x):
    """e^{-x} where only ``1 + e^{-x}`` is used: ``exp``'s reduction without its special cases.

    A sigmoid's denominator needs no exact infinity or zero from the exponential: x is clamped to
    [SIGMOID_LO, SIGMOID_HI], where n = round(-x / ln2) stays within [-126, 128] and 2^n built in
    the exponent bits is a normal float or +inf (n = 128, -x above 88.38: the sigmoid there is
    under 4e-39, below the smallest normal float32, and comes out 0); NaN passes the clamp. The
    negation is folded into the constants (``r' = x + n ln2 = -r``, ``e^r = P(-r')``), and r stays
    within ±ln2/2 since n is never capped, where a polynomial of degree 6 is as good as ``exp``'s of
    degree 7 over its wider range: the sigmoid is 17 AVX-512 instructions, against 25 through
    ``exp``."""
    t = x.type
    xc = b.select(b.fcmp_ordered("<", x, const(t, SIGMOID_LO)), const(t, SIGMOID_LO), x)
    xc = b.select(b.fcmp_ordered(">", xc, const(t, SIGMOID_HI)), const(t, SIGMOID_HI), xc)
    shifted = fma(b, xc, const(t, -LOG2E), const(t, ROUNDING_MAGIC))
    n = b.fsub(shifted, const(t, ROUNDING_MAGIC))
    r_negated = fma(b, n, const(t, LN2_HI), xc)
    r_negated = fma(b, n, const(t, LN2_LO), r_negated)
    return b.fmul(poly(b, r_negated, _EXP_NEGATED), _pow2_of_shifted(b, shifted))


def sigmoid(b, x):
    t = x.type
    return b.fdiv(const(t, 1.0), b.fadd(const(t, 1.0), _exp_negated(b, x)))


def silu(b, x):
    """x sigmoid(x) as ``x / (1 + e^{-x})``: one rounding fewer than the product, one instruction less."""
    t = x.type
    return b.fdiv(x, b.fadd(const(t, 1.0), _exp_negated(b, x)))


def libm(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Apply the C library's function ``name`` (``logf``, or ``log`` on doubles...) lane by lane."""
    t = args[0].type
    scalar = t.element if isinstance(t, ir.VectorType) else t
    fn = intrinsic(b.module, name, scalar, [scalar] * len(args))
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
