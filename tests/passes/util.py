"""Helpers for pass tests: small graphs, random feeds, numeric equivalence, structural comparison."""

from __future__ import annotations

import numpy as np

from graphc.backends.reference import run
from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.printer import format_attr
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import PassManager, Pipeline


def new_graph(*inputs: tuple[str, tuple]) -> tuple[Graph, OpBuilder, list[str]]:
    """A graph with float32 inputs ``(name, shape)`` and a builder whose ops record layer "l"."""
    g = Graph("test")
    names = [g.add_input(n, TensorType("float32", shape)) for n, shape in inputs]
    return g, OpBuilder(g, "l"), names


def const(b: OpBuilder, rng, shape, name="w", low=None) -> str:
    a = rng.standard_normal(shape) if low is None else rng.uniform(low, low + 1.0, shape)
    return b.constant(a.astype(np.float32), name)


def feeds_for(graph: Graph, rng, batch: int, other: int = 5) -> dict[str, np.ndarray]:
    bindings = {s: (batch if s == "batch" else other)
                for n in graph.inputs for d in graph.values[n].type.shape for s in dims.symbols(d)}
    return {n: rng.standard_normal(graph.values[n].type.concrete_shape(bindings)).astype(np.float32)
            for n in graph.inputs}


def assert_equivalent(before: Graph, after: Graph, rng, batches=(1, 3), rtol=1e-5, atol=1e-5,
                      atol_of_scale: bool = False) -> None:
    """Same outputs (by name and position) on random inputs, for each batch size. ``atol_of_scale``: the
    absolute tolerance is ``atol`` times the output's largest magnitude (at least 1), for graphs whose
    outputs grow large (random chains of products): a rewrite that reassociates float32 sums (a
    BatchNorm folded into the weights) errs by the rounding of the summed terms, which scale with the
    output, also where an element cancels to far less than them."""
    assert after.outputs == before.outputs, (before.outputs, after.outputs)
    for batch in batches:
        feeds = feeds_for(before, rng, batch)
        want, got = run(before, feeds), run(after, feeds)
        for name in before.outputs:
            w = np.asarray(want[name])
            scale = max(1.0, float(np.abs(w).max())) if atol_of_scale and w.size else 1.0
            np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol * scale, err_msg=name)


def apply(graph: Graph, *passes: str) -> tuple[Graph, object]:
    """A copy of ``graph`` after running ``passes`` (verified between passes); also the report."""
    out = graph.copy()
    report = PassManager(verify=True).run(out, Pipeline("test", list(passes)))
    return out, report


def structure(graph: Graph, *, attrs: bool = True) -> list[str]:
    """The graph's structure with value names abstracted: inputs by name, constants by type,
    op results by position. Two graphs computing the same way compare equal."""
    names: dict[str, str] = {n: n for n in graph.inputs}
    for n, v in graph.values.items():
        if v.kind == "constant":
            names[n] = f"const{v.type}"
    lines = []
    for i, op in enumerate(_canonical_order(graph)):
        for k, o in enumerate(op.outputs):
            names[o] = f"%{i}" + (f".{k}" if len(op.outputs) > 1 else "")
        args = ", ".join(names[v] for v in op.inputs)
        text = f"{op.type}({args})"
        if attrs:
            text += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(op.attrs.items())) + "}"
        lines.append(text)
    lines.append("return " + ", ".join(names[o] for o in graph.outputs))
    return lines


def _canonical_order(graph: Graph) -> list:
    """Depth-first post-order from the outputs, operands in order: independent of insertion order."""
    order, seen = [], set()

    def visit(value: str) -> None:
        op = graph.producer(value)
        if op is None or op.id in seen:
            return
        seen.add(op.id)
        for v in op.inputs:
            visit(v)
        order.append(op)

    for out in graph.outputs:
        visit(out)
    return order + [op for op in graph.ops() if op.id not in seen]


def assert_same_structure(got: Graph, expected: Graph) -> None:
    a, b = structure(got), structure(expected)
    assert a == b, "structures differ:\n  got:\n    " + "\n    ".join(a) + "\n  expected:\n    " + "\n    ".join(b)
