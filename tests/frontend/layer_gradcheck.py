"""Finite-difference checks of a whole model's gradient (weights and float inputs).

Layers that compose existing ops (EinsumDense, the attention layers) have no ``vjp`` of
their own, but their composition can still be wrong (a transpose the other way round, a
mask that blocks the gradient). The model's inference graph is rebuilt in float64 (masks
and ids keep their dtypes), a loss ``sum_k <w_k, output_k>`` with random ``w_k`` is
differentiated with :func:`graphc.autodiff.gradients`, and along random directions the
result is compared with central differences of the reference interpreter.
"""

from __future__ import annotations

import numpy as np

from graphc import api
from graphc.autodiff import gradients
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType, is_float
from graphc.ops import OpBuilder


def float64_graph(graph: Graph) -> Graph:
    """``graph`` with its float32 inputs and trainable constants (and so its float computation) in
    float64. Other float32 values become float64 where they meet float64 ones (constants are
    copied, computed values cast); those that only meet float32 ones (mask arithmetic) stay."""
    out = Graph(f"{graph.name}_f64")
    b = OpBuilder(out)
    names: dict[str, str] = {}
    wide: dict[str, str] = {}  # float32 constant -> its float64 copy, made on first need
    for name in graph.inputs:
        t = graph.type_of(name)
        names[name] = out.add_input(name, TensorType("float64", t.shape) if t.dtype == "float32" else t)
    for name, array in graph.constants.items():
        value = graph.values[name]
        promote = value.trainable and array.dtype == np.float32
        names[name] = out.add_constant(name, array.astype(np.float64) if promote else array,
                                       trainable=value.trainable, layer=value.layer)

    def widened(name: str) -> str:
        if name not in wide:
            wide[name] = out.add_constant(out.unique_name(f"{name}_f64"), graph.constants[name].astype(np.float64))
        return wide[name]

    for op in graph.ops():
        inputs = [names[v] for v in op.inputs]
        if any(out.type_of(v).dtype == "float64" for v in inputs):
            inputs = [new if out.type_of(new).dtype != "float32" else widened(old)
                      if graph.values[old].kind == "constant" else b.cast(new, dtype="float64")
                      for old, new in zip(op.inputs, inputs)]
        result = b.emit(op.type, *inputs, **dict(op.attrs))
        results = result if isinstance(result, tuple) else (result,)
        for old, new in zip(op.outputs, results):
            names[old] = new
    out.set_outputs([names[v] for v in graph.outputs])
    return out


def check_model_gradients(model, feeds: dict, rng, *, directions: int = 2, h: float = 1e-6,
                          rtol: float = 1e-3, atol: float = 1e-7) -> list[str]:
    """Check d(loss)/d(every trainable weight and every float input the loss is differentiable
    in); returns the names checked."""
    graph = float64_graph(api.lower(model))
    b = OpBuilder(graph)
    terms = []
    for o in graph.outputs:
        t = graph.type_of(o)
        w = b.constant(rng.standard_normal(tuple(feeds_shape(t, feeds, graph))).astype(t.dtype), "w")
        terms.append(b.reduce_sum(b.mul(o, w), axes=tuple(range(t.rank))))
    loss = terms[0] if len(terms) == 1 else b.add_n(*terms)
    wrt = [n for n in graph.inputs if is_float(graph.type_of(n).dtype)]
    wrt += [n for n, v in graph.values.items() if v.kind == "constant" and v.trainable]
    grads = gradients(graph, loss, wrt)
    graph.set_outputs([loss] + [grads[w] for w in wrt if w in grads])
    feeds = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    constants = dict(graph.constants)
    result = run(graph, feeds)
    checked = []
    for name in wrt:
        if name in graph.inputs and name not in grads:
            continue  # a float input only masks (it reaches the loss through a cast to bool)
        assert name in grads, f"no gradient reaches the weight {name!r}"
        g = result[grads[name]]
        base = feeds[name] if name in feeds else constants[name]
        assert g.shape == base.shape and np.all(np.isfinite(g)), f"gradient of {name!r}: {g.shape} vs {base.shape}"
        for _ in range(directions):
            v = rng.standard_normal(base.shape)
            values = []
            for sign in (1.0, -1.0):
                moved = base + sign * h * v
                if name in feeds:
                    values.append(float(run(graph, {**feeds, name: moved})[loss]))
                else:
                    graph.set_constant(name, moved)
                    values.append(float(run(graph, feeds)[loss]))
                    graph.set_constant(name, base)
            numeric = (values[0] - values[1]) / (2 * h)
            analytic = float(np.sum(g * v))
            assert np.isclose(analytic, numeric, rtol=rtol, atol=atol), (
                f"d/d{name} along a random direction: autodiff gives {analytic}, central differences {numeric}")
        checked.append(name)
    return checked


def feeds_shape(t: TensorType, feeds: dict, graph: Graph) -> tuple:
    """A concrete shape for ``t``, with its free dims bound from the feeds' shapes."""
    from graphc.ir import dims

    bindings: dict = {}
    for name, array in feeds.items():
        for d, n in zip(graph.type_of(name).shape, array.shape):
            if isinstance(d, str) and d.isidentifier():
                bindings[d] = n
    return tuple(d if isinstance(d, int) else dims.evaluate(d, bindings) for d in t.shape)
