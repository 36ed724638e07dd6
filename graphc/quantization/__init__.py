"""Post-training static int8 quantization: calibration, QDQ placement, per-layer error.

::

    qgraph = graphc.quantize(model, calibration_samples)            # a Graph in the QDQ format
    graphc.build(qgraph, target="onnx").predict(x)                   # or "reference"
    print(graphc.quantize_report(model, qgraph, samples))            # per-layer error vs float

The quantized graph is the model's optimized float graph with ``quantize_linear`` /
``dequantize_linear`` pairs (see :mod:`graphc.quantization.qdq`): the reference runs it exactly
as an int8 backend computes, ONNX exports it as QuantizeLinear/DequantizeLinear that onnxruntime
fuses into its integer kernels. The native target folds each quantized product into an integer
op first (:mod:`graphc.passes.fold_qdq`: int8 kernels with int32 accumulation and a requantizing
epilogue, :func:`fold_integer_products`); what stays float runs between native quantize/dequantize.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from graphc.ir.graph import Graph
from graphc.passes.fold_qdq import fold_integer_products
from graphc.quantization.calibrate import METHODS, RangeCollector
from graphc.quantization.params import ACTIVATION_DTYPES, activation_params
from graphc.quantization.qdq import QUANTIZABLE, insert_qdq, plan, split_separable, summarize
from graphc.quantization.report import QuantizationReport, compare

__all__ = ["quantize", "quantize_report", "is_quantized", "fold_integer_products", "QuantizationError",
           "QuantizationReport", "METHODS", "QUANTIZABLE"]

WEIGHT_MODES = ("per_channel", "per_tensor")
ACTIVATION_MODES = ("per_tensor",)


class QuantizationError(ValueError):
    """Arguments or calibration data that quantization cannot use (the message names which)."""


def is_quantized(graph: Graph) -> bool:
    """Whether ``graph`` came from :func:`quantize` (and so needs int8 support from its backend)."""
    return "quantization" in graph.meta


def _float_graph(model_or_graph: Any, level: int) -> Graph:
    from graphc.api import lower, verify
    from graphc.frontend.model import Model
    from graphc.passes import optimize

    if isinstance(model_or_graph, Graph):
        if is_quantized(model_or_graph):
            raise QuantizationError(f"graph {model_or_graph.name!r} is already quantized")
        graph = model_or_graph
    elif isinstance(model_or_graph, Model):
        graph = lower(model_or_graph)
    else:
        raise TypeError(f"graphc.quantize expects a Model or a graphc.ir.Graph, got {type(model_or_graph).__name__}")
    verify(graph)
    return optimize(graph, level) if level else graph.copy()


def batches(graph: Graph, data: Any, batch_size: int,
            what: str = "calibration data") -> Iterator[dict[str, np.ndarray]]:
    """``data`` (samples in any form ``predict`` takes: an array, a list or a dict by input name) in
    feeds of at most ``batch_size`` samples; every input is checked against the graph first."""
    from graphc.api import CompiledModel
    from graphc.backends.reference.interpreter import InputError, bind_inputs

    if data is None:
        raise QuantizationError(f"{what} is missing")
    try:
        feeds = CompiledModel(graph, "reference").feeds(data)
    except (InputError, ValueError, TypeError, KeyError) as exc:
        raise QuantizationError(f"{what}: {exc}") from None
    counts = {name: len(a) if np.ndim(a) else 0 for name, a in feeds.items()}
    if not counts or min(counts.values()) == 0:
        empty = [n for n, c in counts.items() if c == 0] or list(graph.inputs)
        raise QuantizationError(f"{what} is empty: no samples for input(s) {', '.join(map(repr, empty))}")
    if len(set(counts.values())) > 1:
        raise QuantizationError(f"{what}: inputs hold different numbers of samples {counts}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise QuantizationError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = next(iter(counts.values()))
    for start in range(0, n, batch_size):
        batch = {name: a[start:start + batch_size] for name, a in feeds.items()}
        try:
            bind_inputs(graph, batch)
        except InputError as exc:
            raise QuantizationError(f"{what}: {exc}") from None
        yield batch


def _check_options(weights: str, activations: str, method: str, activation_dtype: str) -> None:
    for name, value, allowed in (("weights", weights, WEIGHT_MODES), ("activations", activations, ACTIVATION_MODES),
                                 ("method", method, METHODS), ("activation_dtype", activation_dtype,
                                                               ACTIVATION_DTYPES)):
        if value not in allowed:
            raise QuantizationError(f"unknown {name}={value!r}; choose one of {', '.join(allowed)}")


def _check_exclude(graph: Graph, exclude: Iterable[str]) -> dict[str, None]:
    if isinstance(exclude, str):
        exclude = [exclude]
    names = dict.fromkeys(exclude)
    layers = {op.layer for op in graph.ops() if op.layer}
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise QuantizationError(f"exclude names no layer of the model: {', '.join(map(repr, unknown))}; its layers "
                                f"are {', '.join(sorted(layers))}")
    return names


def quantize(model_or_graph: Any, calibration_data: Any, *, weights: str = "per_channel",
             activations: str = "per_tensor", method: str = "minmax", exclude: Iterable[str] = (),
             activation_dtype: str = "uint8", percentile: float = 99.999, batch_size: int = 32,
             level: int = 2) -> Graph:
    """Post-training static quantization of a Model or IR graph; returns the quantized Graph (QDQ format).

    The graph is optimized at ``level`` first (BatchNorm folded, epilogues fused), then run on the
    reference over ``calibration_data`` (samples, in any form ``predict`` takes, in batches of
    ``batch_size``) to calibrate each activation's range with ``method``: ``minmax``,
    ``percentile`` (``percentile`` of the mass kept) or ``entropy`` (KL divergence); a separable
    convolution is calibrated and quantized as its depthwise and pointwise halves. Weights are
    int8 symmetric ``per_channel`` (output channels) or ``per_tensor``; activations per tensor,
    asymmetric ``uint8`` (default) or ``int8``. onnxruntime's own default is int8, but with the
    transposes of a channels-last convolution its optimizer then builds an invalid QuantizeLinear at
    opset 21 and newer; uint8 is also what it recommends for x86 CPUs without VNNI. Layers named in
    ``exclude`` stay float.
    """
    _check_options(weights, activations, method, activation_dtype)
    graph = _float_graph(model_or_graph, level)
    excluded = _check_exclude(graph, exclude)
    split_separable(graph, set(excluded))
    try:
        RangeCollector(method, percentile=percentile)  # checks the percentile before any work
    except ValueError as exc:
        raise QuantizationError(str(exc)) from None
    p = plan(graph, set(excluded))
    collectors = {v: RangeCollector(method, percentile=percentile) for v in p.activations}
    from graphc.backends.reference.interpreter import run

    for feeds in batches(graph, calibration_data, batch_size):
        values = run(graph, feeds, keep=True)
        for name, collector in collectors.items():
            collector.update(values[name])
    quantized = graph.copy()
    quantized.name = graph.name
    inserter = insert_qdq(quantized, p, lambda v: activation_params(*collectors[v].range(), activation_dtype),
                          weights == "per_channel")
    quantized.meta["quantization"] = {
        **summarize(quantized, inserter, p, excluded), "method": method, "weights": weights,
        "activations": activations, "activation_dtype": activation_dtype, "level": level}
    from graphc.api import verify

    verify(quantized)
    return quantized


def quantize_report(model_or_graph: Any, quantized: Graph, data: Any, *, batch_size: int = 32) -> QuantizationReport:
    """Per-layer error of ``quantized`` (from :func:`quantize`) against the float model on ``data``:
    max absolute error and SQNR (dB) of each layer's output, and of each graph output."""
    if not isinstance(quantized, Graph) or not is_quantized(quantized):
        raise QuantizationError("quantize_report needs the graph graphc.quantize returned")
    meta = quantized.meta["quantization"]
    graph = _float_graph(model_or_graph, int(meta.get("level", 2)))
    split_separable(graph, set(meta.get("excluded_layers", ())))
    return compare(graph, quantized, list(batches(graph, data, batch_size, "report data")))

