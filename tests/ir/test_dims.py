"""Symbolic dimensions: building expressions, folding constants, evaluating once bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.ir import TensorType, dims
from graphc.ir.dim_algebra import normalize


def test_static_and_symbols():
    assert dims.is_static(3) and not dims.is_static("batch")
    assert dims.symbols(7) == set()
    assert dims.symbols("(text_len - 4) // 2 + 1") == {"text_len"}
    assert dims.symbols("max(a, b) + c") == {"a", "b", "c"}


def test_constant_folding_and_identities():
    assert dims.add(2, 3) == 5 and dims.sub(7, 2) == 5 and dims.mul(3, 4) == 12
    assert dims.floordiv(17, 4) == 4 and dims.ceildiv(17, 4) == 5 and dims.maximum(2, 9) == 9
    assert dims.minimum(2, 9) == 2
    assert dims.add("n", 0) == "n" and dims.add(0, "n") == "n"
    assert dims.sub("n", 0) == "n" and dims.sub("n", "n") == 0
    assert dims.mul("n", 1) == "n" and dims.mul(1, "n") == "n" and dims.mul("n", 0) == 0
    assert dims.floordiv("n", 1) == "n" and dims.ceildiv("n", 1) == "n"
    assert dims.product([]) == 1 and dims.product([2, 3, 4]) == 24 and dims.product(["n", 1]) == "n"


def test_expression_text():
    assert dims.add("n", -3) == "n - 3"
    assert dims.add("a", "b") == "a + b"
    assert dims.sub(5, "n") == "5 - n"
    assert dims.mul("a", "b + 1") == "a + a*b"
    assert dims.mul("batch", dims.mul("h", "w")) == dims.mul(dims.mul("w", "batch"), "h") == "batch*h*w"
    assert dims.floordiv("n - 1", 2) == "(n + 1) // 2 - 1"
    assert dims.floordiv("n + 1", 2) == "(n + 1) // 2"
    assert dims.ceildiv("n", 4) == "(n + 3) // 4"
    assert dims.maximum("n", 1) == "max(n, 1)"
    assert dims.minimum("n", 1) == "-max(-n, -1)"
    assert dims.minimum(dims.minimum("a", "b"), "c") == "-max(-a, max(-b, -c))"
    conv = dims.add(dims.floordiv(dims.sub("text_len", 4), 1), 1)
    assert conv == "text_len - 3"
    assert dims.evaluate(conv, {"text_len": 200}) == 197


def test_one_size_reached_along_two_roads_is_written_alike():
    """A 'same' convolution of stride 2 after another: the traced size and the re-inferred one."""
    half = dims.ceildiv("d1", 2)
    traced = dims.floordiv(dims.sub(dims.add(half, 1), 1), 2)
    assert traced == dims.floordiv(half, 2) == dims.floordiv(dims.add("d1", 1), 4) == "(d1 + 1) // 4"
    assert dims.same("((((d1 + 1) // 2) + 1) - 1) // 2", "((d1 + 1) // 2) // 2")
    assert dims.floordiv(dims.add(dims.mul(2, "n"), 2), 4) == "(n + 1) // 2"
    assert dims.floordiv(dims.add("n", 4), 2) == "n // 2 + 2"
    assert dims.sub(dims.add("n", "m"), "m") == "n" and dims.sub(dims.add("n", 2), "n") == 2
    assert dims.maximum(dims.add("n", 1), "n") == "n + 1"
    assert dims.maximum(dims.maximum("a", "b"), dims.maximum("b", 3)) == "max(a, max(b, 3))"
    assert dims.floordiv(dims.mul("n", dims.ceildiv("w", 2)), dims.ceildiv("w", 2)) == "n"
    assert not dims.same("n // 2", "(n + 1) // 2") and not dims.same("n", "m")


def test_a_result_returned_without_arithmetic_is_normalized():
    """Adding 0, multiplying or dividing by 1 returns the operand in normal form, as any other result."""
    assert dims.add("(n + 4) // 2", 0) == dims.add(0, "(n + 4) // 2") == "n // 2 + 2"
    assert dims.sub("(n + 4) // 2", 0) == "n // 2 + 2"
    assert dims.mul("2*(n + 1)", 1) == dims.mul(1, "2*(n + 1)") == "2*n + 2"
    assert dims.floordiv("(n) + (n)", 1) == dims.ceildiv("(n) + (n)", 1) == "2*n"


def test_a_min_of_what_a_max_exceeds_is_absorbed():
    """``min(x, max(x, 1))`` is x: a max argument that is a min of something no larger than another is dropped."""
    assert dims.minimum("x", dims.maximum("x", 1)) == "x"
    assert dims.minimum(dims.maximum("x", 1), "x") == "x"
    assert dims.maximum("x", dims.minimum("x", "y")) == "x"
    assert dims.minimum("x", dims.maximum(dims.add("x", 2), "y")) == "x"
    # not absorbed where the max may be below the other argument
    kept = dims.minimum("x", dims.maximum(dims.sub("x", 2), "y"))
    assert dims.symbols(kept) == {"x", "y"}
    assert [dims.evaluate(kept, {"x": 5, "y": y}) for y in (0, 4, 9)] == [3, 4, 5]


@pytest.mark.parametrize("n", [1, 3, 7, 17, 224])
@pytest.mark.parametrize("w", [1, 2, 5, 16])
def test_expression_divisors(n, w):
    """A divisor that is itself an expression divides as a whole: (n * ((w + 1) // 2)) // ((w + 1) // 2) is n,
    where ``x // (w + 1) // 2`` would divide by w + 1 and then by 2."""
    half = dims.floordiv(dims.add("w", 1), 2)
    bindings = {"n": n, "w": w}
    assert dims.evaluate(dims.floordiv(dims.mul("n", half), half), bindings) == n
    assert dims.evaluate(dims.ceildiv("n", half), bindings) == -(-n // ((w + 1) // 2))
    assert dims.evaluate(dims.ceildiv(dims.mul("n", "w"), dims.add("w", 2)), bindings) == -(-(n * w) // (w + 2))
    assert dims.ceildiv(9, 4) == 3 and dims.floordiv("n", "w") == "n // w"


def test_evaluate():
    assert dims.evaluate(5, {}) == 5
    assert dims.evaluate("batch", {"batch": 3}) == 3
    assert dims.evaluate("(text_len - 4) // 2 + 1", {"text_len": 11}) == 4
    assert dims.evaluate("max(a, 2) * -b", {"a": 1, "b": 3}) == -6
    assert dims.evaluate("a*b", {"a": 2, "b": 5, "unused": 9}) == 10


def test_evaluate_names_missing_dims():
    with pytest.raises(KeyError, match=r"free dimension\(s\) \['a', 'c'\] of 'a \+ b \+ c' are not bound"):
        dims.evaluate("a + b + c", {"b": 1})


@pytest.mark.parametrize("text", ["a(b)", "a ** 2", "a / 2", "__import__('os')", "a.b", "", "1 +", "1.5 + a",
                                  "[a]", "a if b else 1", "min(a, b)"])
def test_evaluate_refuses_what_is_not_an_expression(text):
    with pytest.raises((ValueError, KeyError), match="not a dimension expression|min"):
        dims.evaluate(text, {"a": 3, "b": 4})
    if text != "min(a, b)":
        with pytest.raises(ValueError, match="not a dimension expression"):
            dims.evaluate(text, {"a": 3, "b": 4})


def test_same_compatible_unify():
    assert dims.same("n", "n") and dims.same(3, 3) and not dims.same("n", "m")
    assert dims.compatible(3, 3) and dims.compatible("n", 4) and dims.compatible("n", "m")
    assert not dims.compatible(3, 4)
    assert dims.unify("n", 4) == 4 and dims.unify(4, "n") == 4 and dims.unify("n", "m") == "n"


def test_tensor_types_with_symbolic_dims():
    t = TensorType("float32", ("batch", "(n - 1) // 2", 3))
    assert not t.is_static and t.rank == 3
    assert t.concrete_shape({"batch": 2, "n": 9}) == (2, 4, 3)
    assert t.num_elements({"batch": 2, "n": 9}) == 24 and t.nbytes({"batch": 2, "n": 9}) == 96
    assert str(t) == "f32[batch, (n - 1) // 2, 3]"
    with pytest.raises(KeyError, match="'n'"):
        t.concrete_shape({"batch": 2})
    with pytest.raises(TypeError, match="neither int nor symbol"):
        TensorType("float32", (1.5,))


# ---------------------------------------------------------------------------------------------
# Properties: an expression built by the helpers evaluates to the arithmetic it stands for.

NAMES = ["a", "b", "c"]


@st.composite
def expressions(draw, depth=0):
    """(dim, python function of the bindings) pairs."""
    if depth >= 3 or draw(st.booleans()):
        if draw(st.booleans()):
            n = draw(st.integers(-5, 20))
            return n, lambda env, n=n: n
        name = draw(st.sampled_from(NAMES))
        return name, lambda env, name=name: env[name]
    op = draw(st.sampled_from(["add", "sub", "mul", "floordiv", "ceildiv", "maximum", "minimum"]))
    left, fl = draw(expressions(depth + 1))
    if op in ("floordiv", "ceildiv"):
        k = draw(st.integers(1, 7))
        if op == "floordiv":
            return dims.floordiv(left, k), lambda env: fl(env) // k
        return dims.ceildiv(left, k), lambda env: -(-fl(env) // k)
    right, fr = draw(expressions(depth + 1))
    fn = {"add": lambda env: fl(env) + fr(env), "sub": lambda env: fl(env) - fr(env),
          "mul": lambda env: fl(env) * fr(env), "maximum": lambda env: max(fl(env), fr(env)),
          "minimum": lambda env: min(fl(env), fr(env))}[op]
    return getattr(dims, op)(left, right), fn


@settings(max_examples=200, deadline=None)
@given(expressions(), st.fixed_dictionaries({n: st.integers(1, 50) for n in NAMES}))
def test_helpers_evaluate_to_their_arithmetic(expr, env):
    dim, fn = expr
    assert dims.evaluate(dim, env) == fn(env)
    assert dims.symbols(dim) <= set(NAMES)
    if isinstance(dim, str):
        assert dims.evaluate(dims.add(dim, 0), env) == fn(env)
        assert normalize(dim) == dim  # the helpers' results are in normal form already


@st.composite
def raw_texts(draw, depth=0):
    """Expression text written any which way (not through the helpers), with its value's function."""
    if depth >= 4 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            n = draw(st.integers(-6, 12))
            return f"({n})", lambda env, n=n: n
        name = draw(st.sampled_from(NAMES))
        return name, lambda env, name=name: env[name]
    op = draw(st.sampled_from(["+", "-", "*", "//", "max", "neg"]))
    left, fl = draw(raw_texts(depth + 1))
    if op == "neg":
        return f"-({left})", lambda env: -fl(env)
    if op == "//":
        k = draw(st.integers(1, 6))
        return f"({left}) // {k}", lambda env: fl(env) // k
    right, fr = draw(raw_texts(depth + 1))
    if op == "max":
        return f"max({left}, {right})", lambda env: max(fl(env), fr(env))
    fn = {"+": lambda env: fl(env) + fr(env), "-": lambda env: fl(env) - fr(env),
          "*": lambda env: fl(env) * fr(env)}[op]
    return f"({left}) {op} ({right})", fn


@settings(max_examples=400, deadline=None)
@given(raw_texts(), st.fixed_dictionaries({n: st.integers(-20, 50) for n in NAMES}))
def test_the_normal_form_evaluates_as_the_expression(expr, env):
    """Every rewrite is an identity of floor arithmetic, negative values included; normalizing twice
    changes nothing."""
    text, fn = expr
    norm = normalize(text)
    assert dims.evaluate(norm, env) == fn(env) == dims.evaluate(text, env)
    if isinstance(norm, str):
        assert normalize(norm) == norm and dims.symbols(norm) <= set(NAMES)
