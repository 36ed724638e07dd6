"""The reference interpreter against native code or Keras, per output and per layer.

What ``graphc verify --vs native|keras`` prints. Errors are measured as in the onnxruntime
verification (:func:`graphc.backends.onnx.verify.compare`): an element passes when
``|got - ref| <= atol + rtol * |ref|``, and the relative error is taken only over elements large
enough for ``rtol`` to bind, so values near zero do not inflate it.

Per layer, a layer's *outputs* are the values its ops produce that another layer reads or that
are graph outputs. Native code exposes them by compiling the unoptimized graph with those values
as extra outputs; Keras by a probe model whose outputs are its layers' outputs (layers called more
than once, or without a single output tensor, are left out).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from graphc.backends.onnx.verify import Comparison, compare
from graphc.ir.graph import Graph

ENGINES = {"native": "native code", "keras": "Keras"}


@dataclass
class EngineReport:
    engine: str
    level: int
    outputs: list[Comparison]
    layers: list[Comparison] = field(default_factory=list)
    rtol: float = 1e-4
    atol: float = 1e-5
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs) and all(c.ok for c in self.layers)

    @property
    def first_mismatch(self) -> Comparison | None:
        return next((c for c in self.layers if not c.ok), None)

    def table(self) -> str:
        level = f"-O{self.level}, " if self.engine == "native" else ""
        lines = [f"graphc reference vs {ENGINES[self.engine]} ({level}rtol {self.rtol:g}, atol {self.atol:g})"]
        rows = [("output", "shape", "max abs err", "max rel err", "ok")]
        rows += [(c.name, str(c.shape), f"{c.max_abs:.3g}", f"{c.max_rel:.3g}", "yes" if c.ok else "NO")
                 for c in self.outputs]
        lines += _format(rows)
        if self.layers or self.skipped:
            rows = [("layer", "value", "max abs err", "max rel err", "ok")]
            rows += [(c.layer or "", c.name, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}", "yes" if c.ok else "NO")
                     for c in self.layers]
            lines.append("")
            lines += _format(rows)
            if self.skipped:
                lines.append(f"not compared: {', '.join(self.skipped)}")
            bad = self.first_mismatch
            lines.append("first disagreement: " + bad.describe() if bad else "every layer agrees")
        worst = max(self.outputs + self.layers, key=lambda c: c.max_abs, default=None)
        verdict = "PASS" if self.ok else "FAIL"
        if worst is not None:
            verdict += (f": {ENGINES[self.engine]} {'agrees with' if self.ok else 'differs from'} the reference "
                        f"(largest error {worst.max_abs:.3g} absolute, {worst.max_rel:.3g} relative, "
                        f"in {worst.name!r})")
        lines += ["", verdict]
        return "\n".join(lines)


def _format(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def layer_outputs(graph: Graph) -> list[tuple[str, str]]:
    """(layer, value) for every value a layer hands on: read by another layer, or a graph output."""
    found = []
    outputs = set(graph.outputs)
    for op in graph.ops():
        if not op.layer:
            continue
        for v in op.outputs:
            readers = {c.layer for c, _ in graph.consumers(v)}
            if v in outputs or readers - {op.layer}:
                found.append((op.layer, v))
    return found


def _label(comparisons: list[Comparison], graph: Graph) -> None:
    for c in comparisons:
        producer = graph.producer(c.name)
        if producer is not None:
            c.op, c.op_type, c.layer = producer.id, producer.type, producer.layer


def verify_engine(model, inputs: dict, *, engine: str, level: int = 2, per_layer: bool = False,
                  rtol: float = 1e-4, atol: float = 1e-5) -> EngineReport:
    """Run ``model`` on ``inputs`` in the reference interpreter and in ``engine``; compare."""
    import graphc
    from graphc.backends.reference.interpreter import bind_inputs, run

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    reference = graphc.build(model, target="reference", level=0)
    graph = reference.graph
    feeds = reference.feeds(inputs)
    arrays, _ = bind_inputs(graph, feeds)
    values = run(graph, arrays, keep=per_layer)
    probes = layer_outputs(graph) if per_layer else []
    report = EngineReport(engine, level, [], rtol=rtol, atol=atol)
    if engine == "native":
        got = graphc.build(model, target="native", level=level).run(feeds)
        layer_got = _native_layers(graph, feeds, [v for _, v in probes]) if probes else {}
    else:
        got, layer_got, report.skipped = _keras_run(model, feeds, graph, probes)
    report.outputs = [compare(name, values[name], got[name], rtol, atol) for name in graph.outputs]
    _label(report.outputs, graph)
    report.layers = [compare(v, values[v], layer_got[v], rtol, atol) for _, v in probes if v in layer_got]
    _label(report.layers, graph)
    return report


def _native_layers(graph: Graph, feeds: dict, values: list[str]) -> dict[str, np.ndarray]:
    """Every value in ``values`` computed by native code: the unoptimized graph, with them as outputs."""
    from graphc.backends.llvm import build_native

    probe = graph.copy()
    probe.name = f"{graph.name}_layers"
    probe.meta.pop("output_names", None)
    probe.set_outputs(list(graph.outputs) + [v for v in dict.fromkeys(values) if v not in graph.outputs])
    return build_native(probe, level=0).run(feeds)


def _keras_model(model):
    """The same model rebuilt in Keras 3 (through the .keras format)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")  # graphc's keras extra installs the torch backend
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return keras, keras.models.load_model(path, compile=False)


def _keras_run(model, feeds: dict, graph: Graph, probes: list[tuple[str, str]]):
    keras, kmodel = _keras_model(model)
    ordered = [np.asarray(feeds[n]) for n in graph.inputs]
    x = ordered if len(ordered) > 1 else ordered[0]
    out = kmodel.predict(x, verbose=0)
    if isinstance(out, dict):
        out = [out[k] for k in model.output_names]
    out = out if isinstance(out, (list, tuple)) else [out]
    got = dict(zip(graph.outputs, [np.asarray(o) for o in out]))
    if not probes:
        return got, {}, []
    by_layer: dict[str, list[str]] = {}
    for layer, v in probes:
        by_layer.setdefault(layer, []).append(v)
    tensors, names, skipped = [], [], []
    for layer in kmodel.layers:
        if layer.name not in by_layer:
            continue
        nodes = getattr(layer, "_inbound_nodes", [])
        output = layer.output if len(nodes) == 1 else None
        if output is None or isinstance(output, (list, tuple, dict)):
            skipped.append(layer.name)
            continue
        shape = tuple(output.shape[1:])
        match = [v for v in by_layer[layer.name]
                 if tuple(graph.values[v].type.shape[1:]) == shape or len(by_layer[layer.name]) == 1]
        if not match:
            skipped.append(layer.name)
            continue
        tensors.append(output)
        names.append(match[-1])
    if not tensors:
        return got, {}, skipped
    probe = keras.Model(kmodel.inputs, tensors)
    values = probe.predict(x, verbose=0)
    values = values if isinstance(values, (list, tuple)) else [values]
    return got, dict(zip(names, [np.asarray(v) for v in values])), skipped


__all__ = ["verify_engine", "EngineReport", "layer_outputs", "ENGINES"]
