"""Accuracy of the native backend's vectorized math (``mathlib`` through ``VMath``) against float64.

Each function is compiled into a tiny kernel (``<8 x float>`` body, scalar remainder, the host's
target machine) and swept densely: every 1019th float32 bit pattern of both signs (4.2 million
values: subnormals, normals up to the largest finite), ±0, ±inf, NaN, and a dense grid of the
range models see. Errors are in float32 ulps of the exact (float64) result; NaN, infinities and
signed zeros must be NumPy's float32 results exactly. ``pow`` is checked on random pairs over
the whole range, near 1 with large exponents, and on the grid of special values C99 (NumPy)
defines. ``exp`` flushes results below the smallest normal float32 to zero: there only that is
checked. The op-level checks run the same functions through compiled libraries (the ops' native
lowerings) against the reference interpreter.
"""

from __future__ import annotations

import ctypes
import math

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.llvm.irutil import F32, I64, PTR
from graphc.backends.llvm.target import host_target
from graphc.backends.llvm.vmath import VMath
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import load, run_native

LANES = 8
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38],
                    np.float32)
_erf64 = np.frompyfunc(math.erf, 1, 1)


def _kernel_ir(fn, nargs: int, vector: bool) -> ir.Module:
    """``void k(float *out, float *x[, float *y], i64 n)``: out[i] = fn(m, x[i], ...)."""
    mod = ir.Module("vector_math")
    f = ir.Function(mod, ir.FunctionType(ir.VoidType(), [PTR] * (nargs + 1) + [I64]), "k")
    out, *ins, n = f.args
    blocks = {name: f.append_basic_block(name) for name in ("entry", "vtest", "vbody", "stest", "sbody", "done")}
    b = ir.IRBuilder(blocks["entry"])
    width = ir.Constant(I64, LANES)
    n_vector = b.mul(b.sdiv(n, width), width) if vector else ir.Constant(I64, 0)
    b.branch(blocks["vtest"])

    def loop(test, body, start, stop, step, typ):
        b.position_at_end(blocks[test])
        i = b.phi(I64)
        i.add_incoming(start[0], start[1])
        b.cbranch(b.icmp_signed("<", i, stop), blocks[body], blocks["stest" if test == "vtest" else "done"])
        b.position_at_end(blocks[body])
        args = [b.load(b.gep(p, [i], source_etype=F32), typ=typ, align=4) for p in ins]
        b.store(fn(VMath(b), *args), b.gep(out, [i], source_etype=F32), align=4)
        i.add_incoming(b.add(i, ir.Constant(I64, step)), blocks[body])
        b.branch(blocks[test])
        return i

    i = loop("vtest", "vbody", (ir.Constant(I64, 0), blocks["entry"]), n_vector, LANES, ir.VectorType(F32, LANES))
    loop("stest", "sbody", (i, blocks["vtest"]), n, 1, F32)
    b.position_at_end(blocks["done"])
    b.ret_void()
    return mod


def compile_kernel(fn, nargs: int = 1, *, vector: bool = True):
    """A NumPy-callable float32 map of ``fn(m, *values)`` JIT-compiled for the host."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    info = host_target()
    machine = llvm.Target.from_triple(info.triple).create_target_machine(cpu=info.cpu, features=info.features,
                                                                        opt=3)
    module = llvm.parse_assembly(str(_kernel_ir(fn, nargs, vector)))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    cfunc = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * (nargs + 1), ctypes.c_int64)(
        engine.get_function_address("k"))

    def call(*arrays):
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in np.broadcast_arrays(*arrays)]
        out = np.empty_like(arrays[0])
        cfunc(out.ctypes.data, *[a.ctypes.data for a in arrays], out.size)
        return out

    call.engine = engine  # keeps the code alive
    return call


def float32_sweep(step: int = 1019) -> np.ndarray:
    """Every ``step``-th float32 bit pattern below +inf, both signs, and the special values."""
    positive = np.arange(0, 0x7F800000, step, dtype=np.uint32).view(np.float32)
    return np.concatenate([positive, -positive, SPECIALS])


def model_range() -> np.ndarray:
    return np.linspace(-30, 30, 1_000_001, dtype=np.float32)


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in ulps of float32 at ``exact`` (the subnormal ulp below the normal range);
    0 where both are the same infinity or both NaN."""
    with np.errstate(all="ignore"):
        magnitude = np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
        ulp = np.exp2(np.floor(np.log2(magnitude)) - 23)
        err = np.abs(got.astype(np.float64) - exact) / ulp
        rounded = exact.astype(np.float32)  # beyond the largest float32: an infinity
    same = (np.isnan(got) & np.isnan(exact)) | (np.isinf(got) & (got == rounded))
    return np.where(same, 0.0, err)


def assert_special_values_like_numpy(got: np.ndarray, numpy32: np.ndarray, x: np.ndarray, name: str) -> None:
    """NaN where NumPy's float32 gives NaN, the same infinities, and the same sign on zero results."""
    nan = np.isnan(numpy32)
    assert np.array_equal(np.isnan(got), nan), f"{name}: NaN at {x[np.isnan(got) != nan][:5]}"
    inf = np.isinf(numpy32) | np.isinf(got)
    differ = x[inf][got[inf] != numpy32[inf]]
    assert differ.size == 0, f"{name}: infinities differ at {differ[:5]}"
    zero = numpy32 == 0
    assert np.array_equal(np.signbit(got[zero & (got == 0)]), np.signbit(numpy32[zero & (got == 0)])), \
        f"{name}: signed zeros differ"


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


def _sigmoid32(x):
    return _sigmoid64(x.astype(np.float64)).astype(np.float32)


def _erf32(x):
    return _erf64(x.astype(np.float64)).astype(np.float64).astype(np.float32)


# name: (exact float64 function, NumPy float32 function for the special values, max ulp allowed)
UNARY = {
    "exp": (np.exp, np.exp, 1.0),
    "expm1": (np.expm1, np.expm1, 2.0),
    "log": (np.log, np.log, 1.0),
    "log1p": (np.log1p, np.log1p, 1.0),
    "tanh": (np.tanh, np.tanh, 1.5),
    "sigmoid": (_sigmoid64, _sigmoid32, 3.0),
    "silu": (lambda x: x * _sigmoid64(x), lambda x: x * _sigmoid32(x), 3.0),
    "erf": (lambda x: _erf64(x).astype(np.float64), _erf32, 1.5),
}
TINY = float(np.finfo(np.float32).tiny)
# exp and sigmoid flush results below the smallest normal float32 to zero, and silu = x sigmoid(x)
# may be 0 where its sigmoid is (as NumPy's float32 x * sigmoid(x) is): where a function may give 0
# instead of its accurate value
FLUSHED = {"exp": lambda x, exact: np.abs(exact) < TINY,
           "sigmoid": lambda x, exact: np.abs(exact) < TINY,
           "silu": lambda x, exact: _sigmoid64(x) < TINY}


@pytest.fixture(scope="module")
def sweep() -> np.ndarray:
    return np.concatenate([float32_sweep(), model_range()])


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function_is_accurate_over_the_float32_range(name, sweep):
    exact_fn, numpy32_fn, max_ulp = UNARY[name]
    x = sweep
    if name == "erf":  # erf is ±1 in float32 beyond 3.92: sweep its curved part densely, the rest sparsely
        x = np.concatenate([x[np.abs(x) < 5], x[np.abs(x) >= 5][::16]])
    kernel = compile_kernel(lambda m, v: getattr(m, name)(v))
    got = kernel(x)
    with np.errstate(all="ignore"):
        exact = exact_fn(x.astype(np.float64))
        numpy32 = numpy32_fn(x)
    err = ulp_error(got, exact)
    if name in FLUSHED:
        flushed = FLUSHED[name](x.astype(np.float64), exact) & (np.abs(got) < TINY)
        err = np.where(flushed, 0.0, err)
    worst = int(np.argmax(err))
    assert err[worst] <= max_ulp, f"{name}({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}: {err[worst]:.2f} ulp"
    assert_special_values_like_numpy(got, numpy32, x, name)


def _pow_cases(rng) -> tuple[np.ndarray, np.ndarray]:
    n = 400_000
    x_any = np.arange(0, 0x7F800000, 0x7F800000 // n, dtype=np.uint32).view(np.float32)
    x_any = x_any * np.where(rng.random(x_any.size) < 0.3, -1, 1).astype(np.float32)
    y_any = np.concatenate([rng.uniform(-4, 4, x_any.size // 2), rng.integers(-40, 40, x_any.size - x_any.size // 2)])
    x_near_one = 1 + rng.uniform(-1e-3, 1e-3, n)  # y log x near ±100: where a float32 log would be off by ulps
    y_large = rng.uniform(-1, 1, n) * 1e5
    x_models = rng.uniform(0, 10, n)
    y_models = rng.uniform(-50, 50, n)
    xs = np.concatenate([x_any, x_near_one, x_models]).astype(np.float32)
    ys = np.concatenate([y_any, y_large, y_models]).astype(np.float32)
    return xs, ys


def test_pow_is_accurate_over_the_float32_range(rng):
    x, y = _pow_cases(rng)
    got = compile_kernel(lambda m, a, b: m.pow(a, b), 2)(x, y)
    with np.errstate(all="ignore"):
        exact = np.power(x.astype(np.float64), y.astype(np.float64))
        numpy32 = np.power(x, y)
    err = ulp_error(got, exact)
    worst = int(np.argmax(err))
    assert err[worst] <= 1.0, f"pow({x[worst]!r}, {y[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}"
    assert_special_values_like_numpy(got, numpy32, x, "pow")


def test_pow_special_values_are_numpys():
    values = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, np.inf, -np.inf, np.nan,
                       1e-45, -1e-45, 3.4e38, -3.4e38, 16777216.0, -16777216.0, 16777215.0, -16777215.0], np.float32)
    x, y = (a.ravel() for a in np.meshgrid(values, values))
    got = compile_kernel(lambda m, a, b: m.pow(a, b), 2)(x, y)
    with np.errstate(all="ignore"):
        numpy32 = np.power(x, y)
        exact = np.power(x.astype(np.float64), y.astype(np.float64))
    assert_special_values_like_numpy(got, numpy32, x, "pow")
    both_finite = np.isfinite(got) & np.isfinite(numpy32)
    assert np.all(ulp_error(got[both_finite], exact[both_finite]) <= 1.0)
    # zeros: the sign C99 gives (pow(-0, 3) = -0, pow(-inf, -3) = -0, pow(-0, 2) = +0)
    zero = numpy32 == 0
    assert np.array_equal(np.signbit(got[zero]), np.signbit(numpy32[zero]))


@pytest.mark.parametrize("name", ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "silu", "erf", "pow"])
def test_vector_and_scalar_code_agree_bit_for_bit(name, rng):
    """The kernels' vector bodies and scalar remainders run the same formula: same bits."""
    nargs = 2 if name == "pow" else 1
    x = np.concatenate([float32_sweep(65537), rng.standard_normal(4000).astype(np.float32) * 10])
    args = [x] + ([rng.uniform(-5, 5, x.size).astype(np.float32)] if nargs == 2 else [])
    fn = (lambda m, a, b: m.pow(a, b)) if nargs == 2 else (lambda m, v: getattr(m, name)(v))
    vector = compile_kernel(fn, nargs)(*args)
    scalar = compile_kernel(fn, nargs, vector=False)(*args)
    assert np.array_equal(vector.view(np.uint32), scalar.view(np.uint32))


@pytest.mark.parametrize("name", ["log", "log1p", "erf", "pow", "exp", "tanh", "sigmoid", "silu", "expm1"])
def test_float32_math_makes_no_calls_but_llvm_intrinsics(name):
    """No C library call lane by lane: the vector body is straight-line vector code."""
    nargs = 2 if name == "pow" else 1
    fn = (lambda m, a, b: m.pow(a, b)) if nargs == 2 else (lambda m, v: getattr(m, name)(v))
    text = str(_kernel_ir(fn, nargs, vector=True))
    calls = {line.split("@")[1].split("(")[0].strip('"') for line in text.splitlines() if " call " in line}
    assert calls and all(c.startswith("llvm.") for c in calls), calls


# ---------------------------------------------------------------------------- through the ops' native code
def _op_graph(op: str, n: int, **attrs) -> Graph:
    g = Graph(f"vector_math_{op}")
    xs = [g.add_input(name, TensorType("float32", (n,))) for name in (("a", "b") if op == "pow" else ("x",))]
    g.set_outputs([OpBuilder(g).emit(op, *xs, **attrs)])
    return g


# op: (exact float64 function, relative tolerance, absolute tolerance)
OP_CASES = {
    "log": (np.log, 2e-7, 0.0),
    "softplus": (lambda x: np.logaddexp(0.0, x), 3e-7, 0.0),
    "sigmoid": (_sigmoid64, 3e-7, 0.0),
    "tanh": (np.tanh, 2e-7, 0.0),
    "mish": (lambda x: x * np.tanh(np.logaddexp(0.0, x)), 5e-7, 1e-37),
    "silu": (lambda x: x * _sigmoid64(x), 5e-7, 1e-37),
    # x/2 (1 + erf(x/sqrt2)) cancels for x << 0: absolute error there, relative elsewhere
    "gelu": (lambda x: 0.5 * x * (1 + _erf64(x / math.sqrt(2.0)).astype(np.float64)), 3e-7, 2e-7),
}


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_activation_ops_native_code_is_accurate(op, rng):
    exact_fn, rtol, atol = OP_CASES[op]
    x = np.concatenate([SPECIALS, np.linspace(-40, 40, 20_001, dtype=np.float32),
                        rng.standard_normal(3001).astype(np.float32) * 3])  # odd size: vector and scalar code
    graph = _op_graph(op, x.size)
    got = run_native(load(graph), {"x": x})[0]
    with np.errstate(all="ignore"):
        exact = exact_fn(x.astype(np.float64))
    np.testing.assert_allclose(got, exact, rtol=rtol, atol=atol, err_msg=op)


def test_pow_op_native_code_matches_numpy(rng):
    a = np.concatenate([SPECIALS.repeat(SPECIALS.size), rng.uniform(-10, 10, 5001)]).astype(np.float32)
    b = np.concatenate([np.tile(SPECIALS, SPECIALS.size), rng.integers(-9, 9, 5001)]).astype(np.float32)
    got = run_native(load(_op_graph("pow", a.size)), {"a": a, "b": b})[0]
    with np.errstate(all="ignore"):
        numpy32 = np.power(a, b)
        exact = np.power(a.astype(np.float64), b.astype(np.float64))
    assert_special_values_like_numpy(got, numpy32, a, "pow")
    finite = np.isfinite(exact) & np.isfinite(got)
    assert np.all(ulp_error(got[finite], exact[finite]) <= 1.0)


# ---------------------------------------------------------------------------- bounds: relu, relu6, clip
@pytest.mark.parametrize("op", ["maximum", "minimum"])
@pytest.mark.parametrize("bound", [0.0, -0.0, 6.0, -2.5, np.inf])
@pytest.mark.parametrize("number_first", [False, True])
def test_max_and_min_against_a_number_are_numpys(op, bound, number_first, sweep):
    """``m.maximum(x, 6.0)`` (one ``vmaxps``: ``VMath._against_bound``) gives NumPy's float32 result on the
    whole sweep, NaN and the sign of zero included, in the vector body and the scalar remainder alike,
    whichever side the number is on."""
    x = np.concatenate([sweep[::7], SPECIALS])  # odd size: vector and scalar code
    if number_first:
        def fn(m, v):
            return getattr(m, op)(bound, v)
    else:
        def fn(m, v):
            return getattr(m, op)(v, bound)
    got = compile_kernel(fn)(x)
    numpy32 = getattr(np, op)(np.float32(bound), x) if number_first else getattr(np, op)(x, np.float32(bound))
    assert np.array_equal(np.isnan(got), np.isnan(x)), "NaN must stay NaN"
    finite = ~np.isnan(x)
    assert np.array_equal(got[finite], numpy32[finite])
    zero = finite & (numpy32 == 0) & (x == 0)
    assert np.array_equal(np.signbit(got[zero]), np.signbit(x[zero])), "a zero keeps the sign it had"


def test_max_against_a_number_is_one_instruction_pattern():
    """The bound form is a compare and select (what x86 lowers to vmaxps), not ``llvm.maximum``; two
    values, or a NaN bound, keep the intrinsic (NaN from either side must propagate)."""
    assert "llvm.maximum" not in str(_kernel_ir(lambda m, v: m.maximum(v, 0.0), 1, vector=True))
    assert "llvm.maximum" in str(_kernel_ir(lambda m, a, b: m.maximum(a, b), 2, vector=True))
    assert "llvm.minimum" in str(_kernel_ir(lambda m, v: m.minimum(v, float("nan")), 1, vector=True))


@pytest.mark.parametrize("attrs", [{}, {"max_value": 6.0}, {"max_value": 1.5, "threshold": 0.0},
                                   {"negative_slope": 0.1, "max_value": 6.0}, {"threshold": 0.5}])
@pytest.mark.parametrize("n", [1, 7, 17, 35])
def test_relu_ops_propagate_nan_like_the_reference(attrs, n, rng):
    """relu, relu6, with a threshold or a slope (Keras: NaN in, NaN out; ``x * (x > t)`` past a threshold, so
    -inf gives NaN there) on the native code equal the reference interpreter bit for bit, NaN, infinities
    and zeros included, in the op and in a product's fused epilogue."""
    from graphc.backends.reference.interpreter import run

    def run_graph(graph, feeds):
        return list(run(graph, feeds).values())

    x = np.concatenate([SPECIALS, rng.standard_normal(n).astype(np.float32) * 8])
    graph = _op_graph("relu", x.size, **attrs)
    got = run_native(load(graph), {"x": x})[0]
    want = run_graph(graph, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[np.isnan(x)]).all()

    g = Graph("relu_epilogue")  # the same activation on a product's registers
    a = g.add_input("a", TensorType("float32", (n, 3)))
    w = g.add_constant("w", rng.standard_normal((3, 19)).astype(np.float32))
    g.set_outputs([OpBuilder(g).emit("fused_matmul", a, w, activation="relu",
                                     activation_attrs=tuple(sorted(attrs.items())))])
    feed = rng.standard_normal((n, 3)).astype(np.float32) * 4
    feed[0, 1] = np.nan
    got = run_native(load(g), {"a": feed})[0]
    np.testing.assert_allclose(got, run_graph(g, {"a": feed})[0], rtol=1e-6, atol=1e-6)
    assert np.isnan(got[0]).all()
