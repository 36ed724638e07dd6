"""Numeric gradient checks: an op's ``vjp`` against central differences of its reference.

A one-op graph gets float64 inputs (where the op allows), a loss ``sum_k <w_k, output_k>``
with random weights ``w_k``, and the gradients from :func:`graphc.autodiff.gradients`. For
each float input, a random direction ``v`` gives the derivative two ways: ``<grad, v>`` and
``(f(x + h v) - f(x - h v)) / 2h``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.autodiff import gradients
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType, is_float
from graphc.ops import OpBuilder


@dataclass
class Arg:
    """An op input: its shape, dtype and how to draw it.

    draw: normal | positive (0.5..2) | away (|x| in 0.2..2, either sign) | ids:<n> | unit (0.05..0.95)
    | const (a constant of the graph, not differentiated) | bool.
    """

    shape: tuple
    dtype: str = "float64"
    draw: str = "normal"
    differentiate: bool = True
    value: np.ndarray | None = None


@dataclass
class Case:
    op: str
    args: list[Arg]
    attrs: dict = field(default_factory=dict)
    id: str = ""
    rtol: float = 1e-6
    atol: float = 1e-8


def draw(arg: Arg, rng: np.random.Generator) -> np.ndarray:
    if arg.value is not None:
        return np.asarray(arg.value)
    shape = arg.shape
    if arg.draw.startswith("ids:"):
        return rng.integers(0, int(arg.draw[4:]), size=shape).astype(arg.dtype)
    if arg.draw == "bool":
        return rng.random(shape) < 0.5
    if arg.draw == "positive":
        x = rng.uniform(0.5, 2.0, size=shape)
    elif arg.draw == "away":
        x = rng.uniform(0.2, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    elif arg.draw == "unit":
        x = rng.uniform(0.05, 0.95, size=shape)
    else:
        x = rng.standard_normal(shape)
    return x.astype(arg.dtype)


def build(case: Case, arrays: list[np.ndarray], rng: np.random.Generator):
    """The graph (inputs: the differentiated args), the loss and the gradient values."""
    graph = Graph(f"grad_{case.op}")
    b = OpBuilder(graph)
    names, wrt = [], []
    for i, (arg, a) in enumerate(zip(case.args, arrays)):
        if arg.differentiate and is_float(str(a.dtype)):
            names.append(graph.add_input(f"x{i}", TensorType.of(a)))
            wrt.append(names[-1])
        else:
            names.append(graph.add_constant(f"c{i}", a))
    out = b.emit(case.op, *names, **case.attrs)
    outs = out if isinstance(out, tuple) else (out,)
    terms = []
    for o in outs:
        t = graph.type_of(o)
        if not is_float(t.dtype):
            continue
        w = b.constant(rng.standard_normal(t.concrete_shape()).astype(t.dtype), "w")
        terms.append(b.reduce_sum(b.mul(o, w), axes=tuple(range(t.rank))))
    loss = terms[0] if len(terms) == 1 else b.add_n(*terms)
    grads = gradients(graph, loss, wrt)
    graph.set_outputs([loss] + [grads[w] for w in wrt if w in grads])
    return graph, loss, wrt, grads


def check_case(case: Case, rng: np.random.Generator, directions: int = 2, h: float = 1e-6) -> None:
    arrays = [draw(a, rng) for a in case.args]
    graph, loss, wrt, grads = build(case, arrays, rng)
    feeds = {f"x{i}": a for i, a in enumerate(arrays) if f"x{i}" in graph.inputs}
    result = run(graph, feeds)
    assert wrt, f"{case.op}: no input to differentiate"
    for name in wrt:
        assert name in grads, f"{case.op}: no gradient for input {name}"
        g = result[grads[name]]
        x = feeds[name]
        assert g.shape == x.shape, f"{case.op}: gradient of {name} has shape {g.shape}, input {x.shape}"
        assert np.all(np.isfinite(g)), f"{case.op}: gradient of {name} is not finite"
        for _ in range(directions):
            v = rng.standard_normal(x.shape)
            plus = run(graph, {**feeds, name: x + h * v})[loss]
            minus = run(graph, {**feeds, name: x - h * v})[loss]
            numeric = float(plus - minus) / (2 * h)
            analytic = float(np.sum(g * v))
            assert np.isclose(analytic, numeric, rtol=case.rtol * 1e3, atol=case.atol * 1e3 + 1e-7), (
                f"{case.id or case.op}: d/d{name} along a random direction: vjp gives {analytic}, "
                f"central differences {numeric}")


def ids_case(op: str, args: list[Arg], attrs: dict[str, Any] | None = None, id: str = "", **kw) -> Case:
    return Case(op, args, attrs or {}, id=id or op, **kw)
