"""Helpers over ``llvmlite.ir`` for writing kernels: typed constants, loops, variables, dims.

A :class:`Fn` wraps one LLVM function with two insertion points: ``entry`` (allocas, pointer
loads and free-dim arithmetic, hoisted there once) and ``b`` (the body being written). Loops
are counted loops with a phi index; values carried across iterations live in :meth:`Fn.var`
allocas that SROA turns back into registers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

DTYPE_IR = {"float32": F32, "float64": F64, "int32": I32, "int64": I64, "int8": I8, "uint8": I8, "bool": I8}


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def i32(v: int) -> ir.Constant:
    return ir.Constant(I32, int(v))


def f32(v: float) -> ir.Constant:
    return ir.Constant(F32, float(v))


def vec(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


@lru_cache(maxsize=4096)
def _parsed(expression: str) -> ast.expr:
    """A dimension expression's syntax tree (the same expressions recur in every kernel; trees are only read)."""
    return ast.parse(expression, mode="eval").body


class _SpelledVector(ir.Constant):
    """A vector constant whose lanes are all alike, printed as ``undef``, ``zeroinitializer`` or
    ``splat (float 1.5)`` instead of lane by lane.

    Kernels use such constants by the thousand (a polynomial's coefficients in every epilogue, zeroed
    accumulators, the undef operands of a broadcast): spelled lane by lane they were half of a model's
    IR text (EfficientNetB0: 6.0 of 12.6 million characters), written by llvmlite and parsed by LLVM for
    nothing. ``value``'s lanes stay in ``constant`` as llvmlite keeps them.
    """

    def __init__(self, typ: ir.VectorType, value, spelling: str):
        super().__init__(typ, value)
        self._spelling = spelling

    def _get_reference(self) -> str:
        return self._spelling


_VECTOR_CONSTANTS: dict[tuple[str, str], ir.Constant] = {}


def vector_constant(t: ir.VectorType, value) -> ir.Constant:
    """The vector constant of type ``t`` with every lane ``value`` (a number, ``None`` for zero or
    ``ir.Undefined``), spelled short (:class:`_SpelledVector`). Made once per type and value (constants
    are immutable, and kernels ask for the same few thousands of times: EfficientNetB0, 33,000 times)."""
    key = (str(t), repr(value))  # repr tells -0.0 from 0.0, which compare equal
    made = _VECTOR_CONSTANTS.get(key)
    if made is None:
        made = _VECTOR_CONSTANTS[key] = _spelled_vector(t, value)
    return made


def _spelled_vector(t: ir.VectorType, value) -> ir.Constant:
    if value is ir.Undefined:
        return _SpelledVector(t, value, "undef")
    lane = ir.Constant(t.element, 0 if value is None else value)
    zero = ir.Constant(t.element, 0)
    if lane.get_reference() == zero.get_reference():  # -0.0 is spelled otherwise, and is no zeroinitializer
        return _SpelledVector(t, value, "zeroinitializer")
    return _SpelledVector(t, value, f"splat ({lane})")


def constant(t: ir.Type, value) -> ir.Constant:
    """A constant of scalar or vector type ``t`` (every lane ``value`` for a vector)."""
    return vector_constant(t, value) if isinstance(t, ir.VectorType) else ir.Constant(t, value)


def broadcast(b: ir.IRBuilder, value: ir.Value, lanes: int) -> ir.Value:
    """``value`` in every lane of a ``lanes``-wide vector (insertelement + shufflevector, which the
    backend turns into one broadcast)."""
    t = ir.VectorType(value.type, lanes)
    v = b.insert_element(vector_constant(t, ir.Undefined), value, i32(0))
    return b.shuffle_vector(v, vector_constant(t, ir.Undefined), vector_constant(ir.VectorType(I32, lanes), 0))


def intrinsic(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The declaration of an LLVM intrinsic or external function (declared once per module)."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    return fn


def vsuffix(t: ir.Type) -> str:
    """The overload suffix of an intrinsic for type ``t``: f32, v8f32, i64..."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{vsuffix(t.element)}"
    if t == F32:
        return "f32"
    if t == F64:
        return "f64"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    raise TypeError(f"no intrinsic suffix for {t}")


class Var:
    """A mutable local (an alloca in the entry block)."""

    def __init__(self, fn: Fn, typ: ir.Type, init=None, name: str = ""):
        self.fn = fn
        self.type = typ
        self.ptr = fn.entry.alloca(typ, name=name)
        if init is not None:
            fn.entry.store(init if isinstance(init, ir.Value) else ir.Constant(typ, init), self.ptr)

    def get(self) -> ir.Value:
        return self.fn.b.load(self.ptr, typ=self.type)

    def set(self, value: ir.Value) -> None:
        self.fn.b.store(value, self.ptr)


class Fn:
    """One function under construction (see the module docstring)."""

    def __init__(self, module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type],
                 arg_names: list[str] | None = None, *, internal: bool = True):
        self.module = module
        self.fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
        if internal:
            self.fn.linkage = "internal"
        for a, n in zip(self.fn.args, arg_names or []):
            a.name = n
        self.ret_type = ret
        self._entry_block = self.fn.append_basic_block("entry")
        self._body_block = self.fn.append_basic_block("body")
        self.entry = ir.IRBuilder(self._entry_block)
        self.b = ir.IRBuilder(self._body_block)
        self._dims_ptr: ir.Value | None = None
        self._dim_cache: dict[str, ir.Value] = {}
        self._value_numbers: dict[tuple, ir.Value] = {}
        self._counter = 0

    @property
    def args(self):
        return self.fn.args

    def finish(self) -> ir.Function:
        self.entry.branch(self._body_block)
        return self.fn

    def block(self, name: str) -> ir.Block:
        self._counter += 1
        return self.fn.append_basic_block(f"{name}{self._counter}")

    # ------------------------------------------------------------ dims
    def set_dims(self, dims_ptr: ir.Value, names: list[str]) -> None:
        """Where free-dim values live (an i64 array in ``names`` order)."""
        self._dims_ptr = dims_ptr
        self._dim_names = list(names)

    def dim(self, d) -> ir.Value:
        """An i64 for a dim: an int, a free-dim name or an expression over them (computed in entry)."""
        if isinstance(d, ir.Value):
            return d
        if isinstance(d, int):
            return i64(d)
        key = str(d)
        if key not in self._dim_cache:
            self._dim_cache[key] = self._dim_expr(_parsed(key))
        return self._dim_cache[key]

    def _dim_expr(self, node) -> ir.Value:
        e = self.entry
        if isinstance(node, ast.Constant):
            return i64(node.value)
        if isinstance(node, ast.Name):
            if node.id in self._dim_cache:
                return self._dim_cache[node.id]
            k = self._dim_names.index(node.id)
            p = e.gep(self._dims_ptr, [i64(k)], source_etype=I64)
            v = e.load(p, typ=I64, name=node.id)
            self._dim_cache[node.id] = v
            return v
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            x = self._dim_expr(node.operand)
            return self._numbered(("neg", x), lambda: e.sub(i64(0), x))
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            a, b = self._dim_expr(node.left), self._dim_expr(node.right)
            if isinstance(node.op, ast.Add):
                return self._numbered(("add", a, b), lambda: e.add(a, b))
            if isinstance(node.op, ast.Sub):
                return self._numbered(("sub", a, b), lambda: e.sub(a, b))
            if isinstance(node.op, ast.Mult):
                return self._numbered(("mul", a, b), lambda: e.mul(a, b))
            if isinstance(b, ir.Constant) and b.constant == 1:
                return a
            if isinstance(b, ir.Constant) and b.constant > 0:
                # a positive divisor: the quotient rounds up exactly when the remainder is negative
                return self._numbered(("floordiv", a, b), lambda: e.sub(
                    e.sdiv(a, b), e.zext(e.icmp_signed("<", e.srem(a, b), i64(0)), I64)))
            return self._numbered(("floordiv", a, b), lambda: floordiv(e, a, b))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "max" and len(node.args) == 2:
            a, b = (self._dim_expr(x) for x in node.args)
            return self._numbered(("max", a, b), lambda: e.select(e.icmp_signed(">", a, b), a, b))
        raise ValueError(f"unsupported dimension expression {ast.unparse(node)!r}")

    def _numbered(self, key: tuple, make) -> ir.Value:
        """The value of operation ``key`` (its name and operands), computed once per function: dims
        built from others repeat them (a GEMM's chunk count holds its row-block count twice, which
        holds its tile count...), and without sharing the text doubles at each level before LLVM's
        GVN would merge it. Operands are told apart by identity, constants by value."""
        op, *operands = key
        vkey = (op, *((o.constant,) if isinstance(o, ir.Constant) else id(o) for o in operands))
        value = self._value_numbers.get(vkey)
        if value is None:
            value = self._value_numbers[vkey] = make()
        return value

    # ------------------------------------------------------------ control flow
    @contextmanager
    def loop(self, start, stop, step=1, name: str = "i") -> Iterator[ir.Value]:
        """``for (i = start; i < stop; i += step)`` with an i64 phi index."""
        b = self.b
        start, stop, step = self.dim(start), self.dim(stop), self.dim(step)
        pre = b.block
        cond = self.block(f"{name}.cond")
        body = self.block(f"{name}.body")
        end = self.block(f"{name}.end")
        b.branch(cond)
        b.position_at_end(cond)
        idx = b.phi(I64, name=name)
        idx.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", idx, stop), body, end)
        b.position_at_end(body)
        yield idx
        nxt = b.add(idx, step)
        idx.add_incoming(nxt, b.block)
        b.branch(cond)
        b.position_at_end(end)

    @contextmanager
    def if_(self, cond: ir.Value) -> Iterator[None]:
        with self.b.if_then(cond):
            yield

    def var(self, typ: ir.Type, init=None, name: str = "") -> Var:
        return Var(self, typ, init, name)

    # ------------------------------------------------------------ arithmetic
    def min_(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", a, b), a, b)

    def max_(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed(">", a, b), a, b)

    def gep(self, ptr: ir.Value, index, etype: ir.Type, name: str = "") -> ir.Value:
        return self.b.gep(ptr, [self.dim(index)], source_etype=etype, name=name)


def floordiv(b: ir.IRBuilder, a: ir.Value, d: ir.Value) -> ir.Value:
    """Python's ``a // d`` on i64 (rounds toward minus infinity)."""
    q = b.sdiv(a, d)
    r = b.srem(a, d)
    adjust = b.and_(b.icmp_signed("!=", r, i64(0)),
                    b.icmp_signed("!=", b.icmp_signed("<", r, i64(0)), b.icmp_signed("<", d, i64(0))))
    return b.sub(q, b.zext(adjust, I64))
