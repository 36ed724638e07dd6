"""Keras 3's activations beyond the classic ones: the ``hard_silu`` and ``mish`` ops, relu's
threshold tie, and every composed activation's gradient against central differences."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Sequential, layers
from graphc.autodiff import gradients
from graphc.backends.reference import run
from graphc.frontend import activations
from graphc.frontend.lowering import LowerContext
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder, get
from tests.autodiff.gradcheck import Arg, Case, check_case

SHAPES = [(1,), (3, 7), (2, 1, 17)]


def _formula(name: str, x: np.ndarray) -> np.ndarray:
    """Keras's definitions, written out in float64 without graphc."""
    x = x.astype(np.float64)
    if name == "hard_silu":  # 0 below -3, x above 3, x (x + 3) / 6 between
        return np.where(x < -3, 0.0, np.where(x > 3, x, x * (x + 3) / 6))
    return x * np.tanh(np.log1p(np.exp(x)))  # mish


def _run_op(op: str, x: np.ndarray, **attrs) -> np.ndarray:
    g = Graph()
    v = g.add_input("x", TensorType.of(x))
    g.set_outputs([OpBuilder(g).emit(op, v, **attrs)])
    return run(g, {"x": x})[g.outputs[0]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["hard_silu", "mish"])
def test_new_unary_ops_match_keras_formulas(name, shape, rng):
    x = (rng.normal(0, 3, size=shape)).astype(np.float32)
    got = _run_op(name, x)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, _formula(name, x), rtol=1e-6, atol=1e-6)


def test_new_unary_ops_at_extremes_and_kinks():
    x = np.array([-1e4, -80.0, -3.0, -2.999, 0.0, 2.999, 3.0, 80.0, 1e4], dtype=np.float32)
    np.testing.assert_allclose(_run_op("hard_silu", x), _formula("hard_silu", x), rtol=1e-6)
    m = _run_op("mish", x)
    assert np.isfinite(m).all() and m[0] == 0.0 and m[-1] == 1e4


def test_relu_keeps_x_only_above_the_threshold():
    """Keras's ReLU: x where x > threshold, so x == threshold gives 0 (and the leak is 0 there)."""
    x = np.array([0.5, 0.25, 0.75, -1.0], dtype=np.float32)
    np.testing.assert_array_equal(_run_op("relu", x, threshold=0.5), [0.0, 0.0, 0.75, 0.0])
    np.testing.assert_allclose(_run_op("relu", x, threshold=0.5, negative_slope=0.1),
                               [0.0, -0.025, 0.75, -0.15], rtol=1e-6)


# ---------------------------------------------------------------- gradients
_SPREAD = np.array([-5.2, -3.4, -2.6, -1.1, -0.3, 0.2, 0.9, 2.4, 2.8, 3.3, 4.7], dtype=np.float64)


@pytest.mark.parametrize("case", [
    Case("hard_silu", [Arg((11,), value=_SPREAD)], id="hard_silu_every_piece"),
    Case("hard_silu", [Arg((3, 7))], id="hard_silu"),
    Case("mish", [Arg((3, 7))], id="mish"),
    Case("mish", [Arg((11,), value=_SPREAD * 4)], id="mish_wide"),
], ids=lambda c: c.id)
def test_new_op_gradients_match_central_differences(case, rng):
    check_case(case, rng)


def test_unary_grad_of_new_ops_is_the_derivative(rng):
    x = _SPREAD.astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    h = 1e-3
    for name in ("hard_silu", "mish"):
        got = get("unary_grad").reference(x, dy, activation=name, activation_attrs=())
        x64 = x.astype(np.float64)
        numeric = (_formula(name, x64 + h) - _formula(name, x64 - h)) / (2 * h)
        np.testing.assert_allclose(got, dy * numeric, rtol=1e-4, atol=1e-5, err_msg=name)


_COMPOSED = [(n, {}) for n in activations.NAMES if n not in ("linear", "threshold")] + [
    ("relu", {"negative_slope": 0.2, "max_value": 1.5, "threshold": 0.3}),
    ("leaky_relu", {"negative_slope": 0.05}),
    ("celu", {"alpha": 0.7}),
    ("squareplus", {"b": 1.5}),
    ("soft_shrink", {"threshold": 0.3}),
    ("hard_shrink", {"threshold": 0.3}),
    ("threshold", {"threshold": 0.1, "default_value": -2.0}),
    ("softmax", {"axis": 1}),
    ("log_softmax", {"axis": 0}),
    ("glu", {"axis": 1}),
    ("sparsemax", {"axis": 1}),
]


@pytest.mark.parametrize("name,kwargs", _COMPOSED, ids=[f"{n}-{'-'.join(k)}" if k else n for n, k in _COMPOSED])
def test_every_activation_has_the_gradient_of_its_formula(name, kwargs, rng):
    """d/dx <w, act(x)> from autodiff equals central differences of the reference (float64)."""
    x = rng.normal(0, 1.5, size=(3, 6, 4 if name == "glu" else 5))
    # keep clear of kinks, where central differences straddle two pieces
    kinks = {"relu": [0.3], "leaky_relu": [0.0], "relu6": [0.0, 6.0], "hard_sigmoid": [-3.0, 3.0],
             "hard_silu": [-3.0, 3.0], "hard_swish": [-3.0, 3.0], "hard_tanh": [-1.0, 1.0],
             "sparse_plus": [-1.0, 1.0], "sparse_sigmoid": [-1.0, 1.0], "soft_shrink": [-0.5, 0.5, -0.3, 0.3],
             "hard_shrink": [-0.5, 0.5, -0.3, 0.3], "threshold": [0.1], "elu": [0.0], "celu": [0.0],
             "selu": [0.0]}.get(name, [])
    for k in kinks:
        x = np.where(np.abs(x - k) < 0.05, x + 0.1, x)
    g = Graph("grad")
    ctx = LowerContext(g, "act")
    v = g.add_input("x", TensorType.of(x))
    y = activations.lower(ctx, name, v, **activations.check_arguments(name, kwargs))
    w = ctx.constant(rng.normal(size=g.type_of(y).concrete_shape()), "w")
    loss = ctx.reduce_sum(ctx.mul(y, w), axes=tuple(range(g.type_of(y).rank)))
    grad = gradients(g, loss, [v])[v]
    g.set_outputs([loss, grad])
    analytic = run(g, {"x": x})[grad]
    h = 1e-6
    for _ in range(2):
        d = rng.normal(size=x.shape)
        numeric = (run(g, {"x": x + h * d})[loss] - run(g, {"x": x - h * d})[loss]) / (2 * h)
        assert np.isclose(np.sum(analytic * d), numeric, rtol=1e-5, atol=1e-6), name


# ---------------------------------------------------------------- fusion and backends
@pytest.mark.parametrize("name,op", [("hard_silu", "hard_silu"), ("hard_swish", "hard_silu"), ("mish", "mish"),
                                     ("leaky_relu", "relu")])
def test_new_activations_fuse_into_the_product_and_run_everywhere(name, op, rng):
    model = Sequential([Input((5, 7, 3)), layers.Conv2D(4, 3, padding="same", activation=name),
                        layers.Dense(3, activation=name)])
    graph = graphc.optimize(graphc.lower(model), level=2)
    fused = [o for o in graph.ops() if o.type.startswith("fused_")]
    assert len(fused) == 2 and all(o.attrs["activation"] == op for o in fused), graph.op_counts()
    x = rng.normal(0, 3, size=(2, 5, 7, 3)).astype(np.float32)
    want = graphc.build(model, target="reference", level=0).predict(x)
    for target in ("reference", "onnx", "native"):
        got = graphc.build(model, target=target, level=2).predict(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()), err_msg=target)
