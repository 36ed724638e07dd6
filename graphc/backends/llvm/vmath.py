"""``VMath``: the arithmetic op lowerings use inside kernels, on vectors or scalars alike.

An op's native lowering writes its formula once against this interface
(``lambda m, x: m.mul(x, m.tanh(x))``); the kernel calls it with ``<VW x float>`` values
for the vector body and with scalars for the remainder, so every method is type-generic.
Values are ``llvmlite.ir`` values; Python numbers are accepted wherever a value is and
become constants of the other operand's type.
"""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.irutil import DTYPE_IR, F32, constant


def _elem(t: ir.Type) -> ir.Type:
    return t.element if isinstance(t, ir.VectorType) else t


def _is_float(t: ir.Type) -> bool:
    return isinstance(_elem(t), (ir.FloatType, ir.DoubleType))


class VMath:
    """Type-generic arithmetic emitted through one IRBuilder."""

    def __init__(self, b: ir.IRBuilder):
        self.b = b

    # ------------------------------------------------------------ constants
    def const(self, value, like: ir.Value | ir.Type) -> ir.Constant:
        t = like if isinstance(like, ir.Type) else like.type
        v = float(value) if _is_float(t) else int(value)
        return constant(t, v)

    def _pair(self, a, b):
        if not isinstance(a, ir.Value):
            a = self.const(a, b)
        if not isinstance(b, ir.Value):
            b = self.const(b, a)
        return a, b

    # ------------------------------------------------------------ arithmetic
    def add(self, a, b):
        a, b = self._pair(a, b)
        return self.b.fadd(a, b) if _is_float(a.type) else self.b.add(a, b)

    def sub(self, a, b):
        a, b = self._pair(a, b)
        return self.b.fsub(a, b) if _is_float(a.type) else self.b.sub(a, b)

    def mul(self, a, b):
        a, b = self._pair(a, b)
        return self.b.fmul(a, b) if _is_float(a.type) else self.b.mul(a, b)

    def div(self, a, b):
        a, b = self._pair(a, b)
        if _is_float(a.type):
            return self.b.fdiv(a, b)
        # integer division by zero is undefined in LLVM: divide by 1 there (NumPy gives 0 and warns)
        zero = self.b.icmp_signed("==", b, self.const(0, b))
        safe = self.b.select(zero, self.const(1, b), b)
        return self.b.select(zero, self.const(0, a), self.b.sdiv(a, safe))

    def fma(self, a, b, c):
        return mathlib.fma(self.b, a, b, c)

    def neg(self, a):
        return self.b.fneg(a) if _is_float(a.type) else self.b.neg(a)

    def abs(self, a):
        if _is_float(a.type):
            return mathlib.call(self.b, "fabs", a)
        return self.b.select(self.b.icmp_signed("<", a, self.const(0, a)), self.b.neg(a), a)

    def maximum(self, a, b):
        bounded = self._against_bound(">", a, b)
        if bounded is not None:
            return bounded
        a, b = self._pair(a, b)
        if _is_float(a.type):
            return mathlib.maximum(self.b, a, b)
        return self.b.select(self.b.icmp_signed(">", a, b), a, b)

    def minimum(self, a, b):
        bounded = self._against_bound("<", a, b)
        if bounded is not None:
            return bounded
        a, b = self._pair(a, b)
        if _is_float(a.type):
            return mathlib.minimum(self.b, a, b)
        return self.b.select(self.b.icmp_signed("<", a, b), a, b)

    def _against_bound(self, op: str, a, b):
        """max / min (``op`` ">" / "<") of a float value and a number that is not NaN, as
        ``bound op x ? bound : x``: NaN in x propagates (the comparison is false), and x86 lowers the
        pattern to one ``vmaxps`` / ``vminps`` where ``llvm.maximum`` takes five instructions (it also
        orders -0 below +0, which this form leaves to x, as NumPy does). A ReLU6 epilogue is two
        instructions per vector: 1x1 products over 16 channels (MobileNetV2's) spent 9 % of their
        time on it. None where neither operand is such a number."""
        if isinstance(a, ir.Value) == isinstance(b, ir.Value):
            return None
        x, bound = (a, b) if isinstance(a, ir.Value) else (b, a)
        if not _is_float(x.type) or math.isnan(bound):
            return None
        c = self.const(bound, x)
        return self.b.select(self.b.fcmp_ordered(op, c, x), c, x)

    def clip(self, x, lo, hi):
        if lo is not None:
            x = self.maximum(x, lo)
        if hi is not None:
            x = self.minimum(x, hi)
        return x

    # ------------------------------------------------------------ comparisons and selection
    def cmp(self, op: str, a, b):
        """``a op b`` for op in <, <=, >, >=, ==, != (ordered for floats)."""
        a, b = self._pair(a, b)
        if _is_float(a.type):
            return self.b.fcmp_ordered(op, a, b)
        return self.b.icmp_signed(op, a, b)

    def select(self, cond, a, b):
        a, b = self._pair(a, b)
        return self.b.select(cond, a, b)

    def truthy(self, x):
        """A bool (i8) or numeric tensor's values as i1 (nonzero is true)."""
        if _is_float(x.type):
            return self.b.fcmp_unordered("!=", x, self.const(0, x))
        return self.b.icmp_signed("!=", x, self.const(0, x))

    def sign(self, x):
        """-1, 0 or 1 (NaN stays NaN), like NumPy's sign."""
        pos = self.select(self.cmp(">", x, 0.0), self.const(1.0, x), self.const(0.0, x))
        neg = self.select(self.cmp("<", x, 0.0), self.const(-1.0, x), pos)
        return self.select(self.b.fcmp_unordered("uno", x, x), x, neg)

    # ------------------------------------------------------------ transcendental
    def sqrt(self, x):
        return mathlib.call(self.b, "sqrt", x)

    def exp(self, x):
        return mathlib.exp(self.b, x)

    def expm1(self, x):
        return mathlib.expm1(self.b, x)

    def log(self, x):
        return self._float32_or_libm(mathlib.log, "log", x)

    def log1p(self, x):
        return self._float32_or_libm(mathlib.log1p, "log1p", x)

    def erf(self, x):
        return self._float32_or_libm(mathlib.erf, "erf", x)

    def pow(self, x, y):
        x, y = self._pair(x, y)
        if _is_float(x.type):
            return self._float32_or_libm(mathlib.pow, "pow", x, y)
        raise NotImplementedError("integer pow is not supported by the native backend")

    def _float32_or_libm(self, vectorized, libm_name: str, *args):
        """The vectorized float32 function, or the C library's double one lane by lane for float64."""
        if _elem(args[0].type) == F32:
            return vectorized(self.b, *args)
        return mathlib.libm(self.b, libm_name, *args)

    def tanh(self, x):
        return mathlib.tanh(self.b, x)

    def sigmoid(self, x):
        return mathlib.sigmoid(self.b, x)

    def silu(self, x):
        return mathlib.silu(self.b, x)

    # ------------------------------------------------------------ conversion
    def cast(self, x, to_dtype: str, from_dtype: str | None = None):
        """Convert ``x`` to ``to_dtype`` (NumPy's astype: floats truncate toward zero to ints)."""
        t = DTYPE_IR[to_dtype]
        src = x.type
        n = src.count if isinstance(src, ir.VectorType) else None
        dst = ir.VectorType(t, n) if n else t
        if src == dst:
            return x
        if to_dtype == "bool":
            nz = self.b.fcmp_unordered("!=", x, self.const(0, x)) if _is_float(src) else \
                self.b.icmp_signed("!=", x, self.const(0, x))
            return self.b.zext(nz, dst)
        sf, df = _is_float(src), _is_float(dst)
        if sf and df:
            return self.b.fpext(x, dst) if _elem(dst).intrinsic_name == "f64" else self.b.fptrunc(x, dst)
        if sf:
            return self.b.fptosi(x, dst)
        unsigned = from_dtype in ("uint8", "bool")
        if df:
            return self.b.uitofp(x, dst) if unsigned else self.b.sitofp(x, dst)
        sw, dw = _elem(src).width, _elem(dst).width
        if sw == dw:
            return x
        if dw > sw:
            return self.b.zext(x, dst) if unsigned else self.b.sext(x, dst)
        return self.b.trunc(x, dst)
