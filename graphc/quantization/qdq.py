"""Placing quantize/dequantize pairs in an optimized float graph (the QDQ format).

The ops an int8 backend computes in integers are :data:`QUANTIZABLE`: matrix products and
convolutions (plain or with their fused bias, activation and residual epilogue) and additions
of two activations. For each such op, unless its layer is excluded:

- its float activation inputs (and residual) read ``dequantize(quantize(x))`` with the
  calibrated per-tensor parameters of ``x``;
- a constant weight becomes an int8 constant (symmetric, per output channel or per tensor)
  read through ``dequantize_linear``; a constant bias of a product becomes int32 with scale
  ``input scale * weight scale``, as integer kernels accumulate it;
- its output is quantized and every reader (graph outputs included) reads the dequantized
  value: an integer kernel writes nothing else.

Every other op (softmax, LSTM, normalization, pooling, reshapes...) keeps float edges: it reads
the dequantized values and its output stays float unless a quantized op reads it.

A separable convolution is quantized as its two products (:func:`split_separable`, before
calibration): the depthwise convolution, then the pointwise product with the bias and
activation, its input the quantized depthwise result, as onnxruntime and TFLite quantize one.
Each half is then an integer product of its own: the pointwise weights (most of the layer's)
and the bias run in integers where a backend has kernels for a plain product, instead of the
whole layer staying float for want of a fused separable integer kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from graphc.ir.graph import Graph
from graphc.ops.builder import OpBuilder
from graphc.ops.fused import EPILOGUE_ATTRS, epilogue_inputs
from graphc.passes.pattern import emit, replace_value
from graphc.quantization.params import QParams, bias_params, quantize_weight, weight_params

# op type -> (weight input positions, number of inputs before the fused epilogue's bias/residual)
QUANTIZABLE: dict[str, tuple[tuple[int, ...], int | None]] = {
    "matmul": ((1,), None),
    "conv": ((1,), None),
    "fused_matmul": ((1,), 2),
    "fused_conv": ((1,), 2),
    "add": ((), None),
}
# products whose bias an integer kernel adds to its int32 accumulator (a separable convolution's
# reaches the pointwise fused_matmul once split_separable has split it)
INT32_BIAS = ("fused_matmul", "fused_conv")


def split_separable(graph: Graph, exclude: set[str]) -> int:
    """Rewrite each ``fused_separable_conv`` (of a layer not in ``exclude``) in place as the depthwise
    ``conv`` followed by a ``fused_matmul`` by the pointwise weight carrying the epilogue: the same
    arithmetic (the op's reference computes exactly that), with the depthwise result now a value
    that calibration sees and quantization can quantize. Returns how many were split."""
    count = 0
    for op in graph.ops():
        if op.type != "fused_separable_conv" or op.layer in exclude:
            continue
        conv = emit(graph, "conv", *op.inputs[:2], layer=op.layer, name=f"{op.layer}/depthwise",
                    **{k: op.attrs.get(k) for k in ("strides", "dilations", "pads", "groups")})
        y = emit(graph, "fused_matmul", conv, *op.inputs[2:], layer=op.layer, name=op.layer,
                 **{k: op.attrs.get(k, default) for k, default in EPILOGUE_ATTRS.items()})
        replace_value(graph, op.outputs[0], y)
        count += 1
    return count


@dataclass
class Plan:
    """What quantizing a graph touches: the ops, and the activations whose ranges calibration needs."""

    ops: list[str] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)


def _roles(graph: Graph, op) -> dict[int, str]:
    """Each input's role: 'weight', 'bias', 'activation' or 'float' (left as it is)."""
    weights, num_main = QUANTIZABLE[op.type]
    bias = None
    if num_main is not None:
        bias, _ = epilogue_inputs(num_main, op.attrs, len(op.inputs), op.type)
    roles = {}
    for i, v in enumerate(op.inputs):
        t = graph.type_of(v)
        constant = v in graph.constants
        if t.dtype != "float32":
            roles[i] = "float"
        elif i in weights and constant and t.rank >= 2:
            roles[i] = "weight"
        elif i == bias and constant and op.type in INT32_BIAS:
            roles[i] = "bias"
        elif not constant:
            roles[i] = "activation"
        else:
            roles[i] = "float"
    return roles


def plan(graph: Graph, exclude: set[str]) -> Plan:
    """The ops to quantize and the activations (inputs and outputs) that need calibrated ranges."""
    p = Plan()
    needed: dict[str, None] = {}
    for op in graph.ops():
        if op.type not in QUANTIZABLE or op.layer in exclude or graph.type_of(op.outputs[0]).dtype != "float32":
            continue
        roles = _roles(graph, op)
        if op.type == "add" and list(roles.values()) != ["activation", "activation"]:
            continue
        p.ops.append(op.id)
        for i, role in roles.items():
            if role == "activation":
                needed[op.inputs[i]] = None
        needed[op.outputs[0]] = None
    p.activations = list(needed)
    return p


class QDQInserter:
    """Rewrites a copy of the float graph; ``dequantized[v]`` names the value readers of ``v`` now see."""

    def __init__(self, graph: Graph, activation: Callable[[str], QParams], per_channel: bool):
        self.graph = graph
        self.activation = activation
        self.per_channel = per_channel
        self.dequantized: dict[str, str] = {}
        self.params: dict[str, QParams] = {}
        self._weights: dict[str, tuple[str, QParams]] = {}
        self._twins: set[str] = set()  # dequantized values (already quantized: never again)

    def _pair(self, value: str, params: QParams, layer: str | None) -> str:
        g, b = self.graph, OpBuilder(self.graph, layer=layer)
        s = g.add_constant(g.unique_name(f"{value}/scale"), params.scale, layer=layer)
        z = g.add_constant(g.unique_name(f"{value}/zero_point"), params.zero_point, layer=layer)
        q = b.emit("quantize_linear", value, s, z, axis=params.axis, name=f"{value}/quantize")
        twin = b.emit("dequantize_linear", q, s, z, axis=params.axis, name=f"{value}/dequantize")
        self._twins.add(twin)
        self.params[twin] = params
        return twin

    def activation_input(self, value: str, layer: str | None) -> str:
        """The dequantized twin of an activation (made once; the first reader's layer owns it)."""
        if value in self._twins:
            return value
        if value not in self.dequantized:
            self.params[value] = self.activation(value)
            self.dequantized[value] = self._pair(value, self.params[value], layer)
        return self.dequantized[value]

    def weight(self, value: str, layer: str | None) -> tuple[str, QParams]:
        if value not in self._weights:
            g = self.graph
            w = g.constants[value]
            params = weight_params(w, self.per_channel, axis=-1)
            q = g.add_constant(g.unique_name(f"{value}/int8"), quantize_weight(w, params), layer=layer)
            s = g.add_constant(g.unique_name(f"{value}/scale"), params.scale, layer=layer)
            z = g.add_constant(g.unique_name(f"{value}/zero_point"), params.zero_point, layer=layer)
            d = OpBuilder(g, layer=layer).emit("dequantize_linear", q, s, z, axis=-1, name=f"{value}/dequantize")
            self._weights[value] = (d, params)
        return self._weights[value]

    def bias(self, value: str, input_scale: np.ndarray, weight_scale: np.ndarray, layer: str | None) -> str:
        g = self.graph
        b = g.constants[value]
        params = bias_params(input_scale, weight_scale, b.shape[0])
        q = g.add_constant(g.unique_name(f"{value}/int32"), quantize_weight(b, params), layer=layer)
        s = g.add_constant(g.unique_name(f"{value}/scale"), params.scale, layer=layer)
        z = g.add_constant(g.unique_name(f"{value}/zero_point"), params.zero_point, layer=layer)
        return OpBuilder(g, layer=layer).emit("dequantize_linear", q, s, z, axis=0, name=f"{value}/dequantize")

    def quantize_op(self, op_id: str) -> None:
        g = self.graph
        op = g.op(op_id)
        roles = _roles(g, op)
        inputs = list(op.inputs)
        weight_scale = None
        for i, role in roles.items():
            if role == "activation":
                inputs[i] = self.activation_input(op.inputs[i], op.layer)
            elif role == "weight":
                inputs[i], wp = self.weight(op.inputs[i], op.layer)
                weight_scale = wp.scale if weight_scale is None else weight_scale
        for i, role in roles.items():
            x_params = self.params.get(op.inputs[0])
            if role == "bias" and weight_scale is not None and x_params is not None:
                inputs[i] = self.bias(op.inputs[i], x_params.scale, weight_scale, op.layer)
        g.set_op_inputs(op.id, inputs)
        self.quantize_output(op.outputs[0], op.layer)

    def quantize_output(self, value: str, layer: str | None) -> None:
        """Quantize an op's result: every reader, graph outputs included, reads the dequantized value,
        which takes over the value's name when it is a graph output."""
        g = self.graph
        readers = [(c, i) for c, i in g.consumers(value)]
        params = self.params[value] = self.activation(value)
        twin = self._pair(value, params, layer)
        for reader, i in readers:
            new = list(reader.inputs)
            new[i] = twin
            g.set_op_inputs(reader.id, new)
        if value in g.outputs:
            float_name = g.unique_name(f"{value}/float")
            g.rename_value(value, float_name)
            g.set_outputs([twin if v == float_name else v for v in g.outputs])
            self._twins.discard(twin)
            g.rename_value(twin, value)
            twin = value
            self._twins.add(twin)
        self.dequantized[value] = twin


def insert_qdq(graph: Graph, p: Plan, activation: Callable[[str], QParams], per_channel: bool) -> QDQInserter:
    """Quantize the planned ops of ``graph`` in place (topological order)."""
    inserter = QDQInserter(graph, activation, per_channel)
    for op_id in p.ops:
        inserter.quantize_op(op_id)
    return inserter


def summarize(graph: Graph, inserter: QDQInserter, p: Plan, excluded: Mapping[str, None]) -> dict:
    """The JSON-able record kept in ``graph.meta['quantization']``."""
    return {"ops": list(p.ops), "excluded_layers": list(excluded),
            "dequantized": dict(inserter.dequantized)}
