"""Run an exported graph in onnxruntime and compare it with graphc's reference interpreter.

``verify_graph`` binds the inputs once (errors name the input), runs the reference
interpreter and onnxruntime on the same arrays and reports, per output, the largest
absolute and relative error. With ``per_layer=True`` every IR value is also exposed as an
ONNX output, compared in topological order, and the first value beyond tolerance is named
with the op and the user's layer that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphc.backends.onnx.export import export_graph
from graphc.backends.onnx.runtime import make_session
from graphc.backends.reference.interpreter import bind_inputs, run
from graphc.ir.graph import Graph


@dataclass
class Comparison:
    """How one tensor computed by onnxruntime differs from the reference."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    max_rel: float
    ok: bool
    op: str | None = None
    op_type: str | None = None
    layer: str | None = None
    worst: tuple[int, ...] | None = None  # index of the largest absolute error
    note: str = ""

    def describe(self) -> str:
        who = f"layer {self.layer!r}" if self.layer else f"value {self.name!r}"
        if self.op:
            who += f" (value {self.name!r} of op {self.op!r}, {self.op_type})"
        if self.note:
            return f"{who}: {self.note}"
        at = f" at index {self.worst}" if self.worst is not None else ""
        return f"{who}: max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}{at}"


def compare(name: str, ref: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> Comparison:
    """Compare ``got`` with the reference ``ref`` like ``np.isclose`` (NaNs in the same place agree).

    An element passes when ``|got - ref| <= atol + rtol * |ref|``. The relative error is taken
    over the elements where ``rtol`` is the binding tolerance (``|ref| >= atol / rtol``); smaller
    ones are judged by ``atol`` and show in the absolute error.
    """
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return Comparison(name, tuple(ref.shape), ref.dtype.name, float("inf"), float("inf"), False,
                          note=f"shape {tuple(got.shape)} from onnxruntime, {tuple(ref.shape)} from the reference")
    if ref.size == 0:
        return Comparison(name, tuple(ref.shape), ref.dtype.name, 0.0, 0.0, True)
    a, b = got.astype(np.float64), ref.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        mag = np.abs(b)
        ok = bool(np.all(same | (diff <= atol + rtol * mag)))
        rel_mask = mag >= atol / rtol if rtol > 0 else mag > 0
        max_rel = float(np.max(diff[rel_mask] / mag[rel_mask])) if rel_mask.any() else 0.0
    worst_flat = int(np.argmax(diff))
    max_abs = float(diff.flat[worst_flat])
    worst = tuple(int(i) for i in np.unravel_index(worst_flat, diff.shape)) if max_abs > 0 else None
    return Comparison(name, tuple(ref.shape), ref.dtype.name, max_abs, max_rel, ok, worst=worst)


@dataclass
class VerifyReport:
    """onnxruntime against the reference interpreter: per output and, optionally, per IR value."""

    outputs: list[Comparison]
    layers: list[Comparison] = field(default_factory=list)
    rtol: float = 1e-4
    atol: float = 1e-5
    opset: int = 0
    reference: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    onnxruntime: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs) and all(c.ok for c in self.layers)

    @property
    def max_abs_error(self) -> float:
        return max((c.max_abs for c in self.outputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel for c in self.outputs), default=0.0)

    @property
    def first_mismatch(self) -> Comparison | None:
        """The first IR value (topological order) beyond tolerance; needs ``per_layer=True``."""
        return next((c for c in self.layers if not c.ok), None)

    def output(self, name: str) -> Comparison:
        for c in self.outputs:
            if c.name == name:
                return c
        raise KeyError(f"no output {name!r}; outputs: {[c.name for c in self.outputs]}")

    def table(self) -> str:
        """The report as a text table (what ``graphc verify --vs onnxruntime`` prints)."""
        lines = [f"graphc reference vs onnxruntime (opset {self.opset}, rtol {self.rtol:g}, atol {self.atol:g})"]
        rows = [("output", "shape", "max abs err", "max rel err", "ok")]
        rows += [(c.name, str(c.shape), f"{c.max_abs:.3g}", f"{c.max_rel:.3g}", "yes" if c.ok else "NO")
                 for c in self.outputs]
        lines += _format(rows)
        if self.layers:
            per_layer: dict[str, list[Comparison]] = {}
            for c in self.layers:
                per_layer.setdefault(c.layer or "(no layer)", []).append(c)
            rows = [("layer", "values", "max abs err", "max rel err", "ok")]
            for layer, cs in per_layer.items():
                rows.append((layer, str(len(cs)), f"{max(c.max_abs for c in cs):.3g}",
                             f"{max(c.max_rel for c in cs):.3g}", "yes" if all(c.ok for c in cs) else "NO"))
            lines.append("")
            lines += _format(rows)
            bad = self.first_mismatch
            lines.append("")
            lines.append("first disagreement: " + bad.describe() if bad else "every layer agrees")
        if self.note:
            lines.append(self.note)
        lines.append("")
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _format(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                    outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` on the CPU provider; returns the requested outputs (default: all) by name."""
    session = make_session(model)
    names = outputs or [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    results = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, results))


def verify_graph(graph: Graph, feeds: Mapping[str, np.ndarray], *, per_layer: bool = False,
                 rtol: float = 1e-4, atol: float = 1e-5, opset: int | None = None,
                 reference_graph: Graph | None = None) -> VerifyReport:
    """Export ``graph``, run it in onnxruntime and in the reference interpreter, and compare.

    ``reference_graph`` (same inputs and outputs, e.g. the unoptimized lowering of an optimized
    ``graph``) is what the outputs are compared with; intermediates always come from ``graph``.
    """
    arrays, _ = bind_inputs(graph, feeds)
    values = [o for op in graph.ops() for o in op.outputs] if per_layer else []
    model = export_graph(graph, opset, keep=values)
    opset_used = model.opset_import[0].version
    # the reference runs first: inputs a model cannot take fail there, naming the layer
    reference = run(graph, arrays, keep=per_layer) if per_layer or reference_graph is None else {}
    final = reference
    if reference_graph is not None:
        ref_arrays, _ = bind_inputs(reference_graph, feeds)
        final = run(reference_graph, ref_arrays)
    got = run_onnxruntime(model, arrays)
    outputs = [compare(name, final[name], got[name], rtol, atol) for name in graph.outputs]
    for c in outputs:
        producer = graph.producer(c.name)
        if producer is not None:
            c.op, c.op_type, c.layer = producer.id, producer.type, producer.layer
    layers = []
    for op in graph.ops() if per_layer else []:
        for out in op.outputs:
            c = compare(out, reference[out], got[out], rtol, atol)
            c.op, c.op_type, c.layer = op.id, op.type, op.layer
            layers.append(c)
    if per_layer:
        reference = {k: v for k, v in reference.items() if k in graph.values and graph.values[k].kind != "constant"}
    reference.update({k: final[k] for k in graph.outputs})
    note = ""
    if layers and all(c.ok for c in layers) and not all(c.ok for c in outputs):
        note = ("every value of the exported graph agrees with the reference, so the difference comes from "
                "graph optimization (compare with optimize=False)")
    return VerifyReport(outputs, layers, rtol, atol, opset_used, reference, got, note)
