"""The per-layer error of a quantized graph: each layer's output, quantized against float.

Both graphs run on the reference over the same data; a layer's output is the last value its ops
produce. Errors accumulate along the graph, so the first layer whose SQNR drops sharply is the
one worth excluding (``graphc.quantize(..., exclude=[name])``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from graphc.backends.reference.interpreter import run
from graphc.ir.graph import Graph


@dataclass
class LayerError:
    layer: str
    op_type: str
    quantized: bool
    max_abs: float
    sqnr_db: float


@dataclass
class QuantizationReport:
    layers: list[LayerError]
    outputs: list[LayerError]

    def table(self) -> str:
        rows = [("layer", "op", "int8", "max abs err", "SQNR dB")]
        for e in self.layers + self.outputs:
            rows.append((e.layer, e.op_type, "yes" if e.quantized else "-", f"{e.max_abs:.4g}", f"{e.sqnr_db:.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio: 10 log10(sum(ref^2) / sum((ref - approx)^2)); inf when equal."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def _layer_outputs(graph: Graph) -> dict[str, tuple[str, str]]:
    """Each layer's last produced float value and that op's type, in topological order."""
    last: dict[str, tuple[str, str]] = {}
    for op in graph.ops():
        if op.layer and graph.type_of(op.outputs[0]).dtype == "float32":
            last.pop(op.layer, None)
            last[op.layer] = (op.outputs[0], op.type)
    return last


def compare(float_graph: Graph, quantized: Graph, batches: Iterable[Mapping[str, np.ndarray]]) -> QuantizationReport:
    """Run both graphs over ``batches`` (feeds by input name) and compare every layer's output."""
    meta = quantized.meta.get("quantization", {})
    twin = meta.get("dequantized", {})
    quantized_layers = {quantized.op(i).layer for i in meta.get("ops", []) if quantized.has_op(i)}
    layers = _layer_outputs(float_graph)
    acc: dict[str, list[np.ndarray]] = {}
    for feeds in batches:
        f = run(float_graph, feeds, keep=True)
        q = run(quantized, feeds, keep=True)
        for layer, (value, _) in layers.items():
            seen = twin.get(value, value)
            if seen in q:
                acc.setdefault(layer, []).append(np.stack([f[value].ravel(), q[seen].ravel()]))
        for name in float_graph.outputs:
            acc.setdefault(f"output {name}", []).append(np.stack([f[name].ravel(), q[name].ravel()]))

    def row(name: str, op_type: str, is_q: bool) -> LayerError:
        pairs = np.concatenate(acc[name], axis=1).astype(np.float64)
        return LayerError(name, op_type, is_q, float(np.max(np.abs(pairs[0] - pairs[1]), initial=0.0)),
                          sqnr_db(pairs[0], pairs[1]))

    rows = [row(layer, op_type, layer in quantized_layers) for layer, (_, op_type) in layers.items() if layer in acc]
    outs = [row(f"output {n}", "", False) for n in float_graph.outputs]
    return QuantizationReport(rows, outs)
