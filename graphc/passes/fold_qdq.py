"""Quantized products of the QDQ format folded into integer ops (``qlinear_matmul`` / ``qlinear_conv``).

:func:`graphc.quantize` writes a quantized product as float ops between quantize/dequantize
pairs (see :mod:`graphc.quantization.qdq`)::

    y = quantize(act(dequantize(x_q) @ dequantize(w_q) + dequantize(b_q)), s_y, z_y)

which an integer backend computes as one op: int32 accumulation of ``x_q - z_x`` times ``w_q``,
the int32 bias added, and a requantizing epilogue (:mod:`graphc.ops.qlinear`). This pass makes
that op, for ``matmul``/``fused_matmul`` (a 2-D weight) and ``conv``/``fused_conv`` (1-D or 2-D,
without groups or depthwise, concrete channels and padding: what the native int8 kernels run) when:

- the activation input is a ``dequantize_linear`` of uint8/int8 with constant per-tensor
  parameters, the weight one of a constant int8 symmetric weight (per tensor or per output
  channel), and the bias (if any) one of a constant int32 bias whose scale is exactly
  ``float32(x_scale * w_scale)`` (as quantization writes it, so it adds to the accumulator);
- the epilogue is at most a ReLU (with or without a ceiling), then possibly a residual that is
  a dequantized uint8/int8 tensor of the output's shape and another ReLU (no other activation);
- the product's only reader is a ``quantize_linear`` with constant per-tensor parameters.

Everything else keeps its float edges: a product that is not followed by a quantize, or whose
epilogue the integer op cannot express, still reads the dequantized values and runs in float.
Between integer ops, slices, reshapes, transposes, concatenations and max pooling move before the
dequantize (bytes are copied and compared, not floats), ``quantize(dequantize(q))`` becomes one
``requantize_linear``, a quantized sum of two dequantized tensors one ``qlinear_add``, and an
embedding lookup that is quantized reads a table quantized at build time.
The dequantize ops that only the folded product read disappear with it, and the dequantized
constants that float ops still read (a residual convolution's weights) become float constants, which
the float kernels pack like any weight.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.graph import Graph, Op
from graphc.ops.fused import epilogue_inputs
from graphc.passes.dce import dce
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import emit, replace_value

PRODUCTS = ("matmul", "fused_matmul", "conv", "fused_conv")


def _dequantized(graph: Graph, value: str) -> Op | None:
    """The dequantize_linear producing ``value`` when its scale and zero point are constants."""
    op = graph.producer(value)
    if op is None or op.type != "dequantize_linear":
        return None
    if op.inputs[1] not in graph.constants or op.inputs[2] not in graph.constants:
        return None
    return op


def _per_tensor(graph: Graph, op: Op) -> bool:
    return graph.constants[op.inputs[1]].ndim == 0


def _relu(name: str, pairs) -> tuple[str, float | None] | None:
    """(activation, max_value) of the integer op for a fused op's activation, or None if it has none."""
    pairs = dict(pairs or ())
    if name == "linear":
        return "linear", None
    if name != "relu" or float(pairs.get("negative_slope", 0.0)) != 0.0 or float(pairs.get("threshold", 0.0)) != 0.0:
        return None
    top = pairs.get("max_value")
    if top is not None and not float(top) > 0:
        return None
    return "relu", None if top is None else float(top)


def _epilogue(graph: Graph, op: Op) -> dict | None:
    """The integer op's epilogue attributes and residual operands for the product's, or None."""
    if op.type not in ("fused_matmul", "fused_conv"):
        return {"activation": "linear", "max_value": None}
    a = op.attrs
    act = _relu(a.get("activation", "linear"), a.get("activation_attrs"))
    if act is None:
        return None
    epilogue = {"activation": act[0], "max_value": act[1]}
    if not a.get("has_residual"):
        return epilogue
    post = _relu(a.get("post_activation", "linear"), a.get("post_activation_attrs"))
    _, residual = epilogue_inputs(2, a, len(op.inputs), op.type)
    d = _dequantized(graph, op.inputs[residual])
    if post is None or d is None or not _per_tensor(graph, d):
        return None
    r_type, out = graph.type_of(d.inputs[0]), graph.type_of(op.outputs[0])
    if r_type.dtype not in ("uint8", "int8") or r_type.shape != out.shape:
        return None
    return {**epilogue, "has_residual": True, "post_activation": post[0], "post_max_value": post[1],
            "residual": list(d.inputs)}


def _native_conv(graph: Graph, op: Op) -> bool:
    """A convolution the native int8 kernels run: 1-D or 2-D, concrete channels and padding, without groups
    or depthwise (one group per channel, one output channel each, no residual)."""
    if op.type not in ("conv", "fused_conv"):
        return True
    x, w = graph.type_of(op.inputs[0]), graph.type_of(op.inputs[1])
    pads = op.attrs.get("pads") or ()
    groups = int(op.attrs.get("groups", 1))
    depthwise = (groups == x.shape[-1] and w.shape[-2] == 1 and w.shape[-1] == groups
                 and not op.attrs.get("has_residual"))
    return ((groups == 1 or depthwise) and x.rank in (3, 4) and isinstance(x.shape[-1], int)
            and all(isinstance(p, int) for pair in pads for p in pair))


def _bias(graph: Graph, op: Op, x_scale: np.ndarray, w_scale: np.ndarray) -> str | None | bool:
    """The int32 bias constant, None without a bias, False when the bias cannot be folded."""
    if op.type not in ("fused_matmul", "fused_conv") or not op.attrs.get("has_bias"):
        return None
    d = _dequantized(graph, op.inputs[2])
    if d is None or d.inputs[0] not in graph.constants or graph.type_of(d.inputs[0]).dtype != "int32":
        return False
    n = graph.type_of(op.outputs[0]).shape[-1]
    scale, zero = graph.constants[d.inputs[1]], graph.constants[d.inputs[2]]
    want = np.broadcast_to(np.float32(x_scale) * np.asarray(w_scale, np.float32), (n,))
    if np.any(zero != 0) or not np.array_equal(np.broadcast_to(scale, (n,)), want):
        return False
    return d.inputs[0]


def _fold(graph: Graph, op: Op) -> bool:
    out = op.outputs[0]
    readers = graph.consumers(out)
    if out in graph.outputs or len(readers) != 1 or readers[0][0].type != "quantize_linear" or readers[0][1] != 0:
        return False
    q = readers[0][0]
    if q.inputs[1] not in graph.constants or q.inputs[2] not in graph.constants or not _per_tensor(graph, q):
        return False
    epilogue = _epilogue(graph, op)
    dx, dw = _dequantized(graph, op.inputs[0]), _dequantized(graph, op.inputs[1])
    if epilogue is None or dx is None or dw is None or not _per_tensor(graph, dx) or not _native_conv(graph, op):
        return False
    if graph.type_of(dx.inputs[0]).dtype not in ("uint8", "int8"):
        return False
    w_q = dw.inputs[0]
    w_type = graph.type_of(w_q)
    if w_q not in graph.constants or w_type.dtype != "int8" or (op.type.endswith("matmul") and w_type.rank != 2):
        return False
    w_scale, w_zero = graph.constants[dw.inputs[1]], graph.constants[dw.inputs[2]]
    if np.any(w_zero != 0) or (w_scale.ndim == 1 and int(dw.attrs.get("axis", -1)) % w_type.rank != w_type.rank - 1):
        return False
    x_scale = graph.constants[dx.inputs[1]]
    bias = _bias(graph, op, x_scale, w_scale)
    if bias is False:
        return False
    if bias is None:
        n = w_type.shape[-1]
        bias = graph.add_constant(graph.unique_name(f"{w_q}/zero_bias"), np.zeros(n, np.int32), layer=op.layer)
    operands = [dx.inputs[0], dx.inputs[1], dx.inputs[2], w_q, dw.inputs[1], dw.inputs[2], bias, q.inputs[1],
                q.inputs[2], *epilogue.pop("residual", [])]
    if op.type.endswith("conv"):
        conv = {k: op.attrs.get(k) for k in ("strides", "dilations", "pads", "groups")}
        y = emit(graph, "qlinear_conv", *operands, layer=op.layer, **epilogue, **conv)
    else:
        y = emit(graph, "qlinear_matmul", *operands, layer=op.layer, **epilogue)
    folded = graph.producer(y).type
    replace_value(graph, q.outputs[0], y)  # y may take the quantize's name (a graph output)
    note(f"{op.type} folded into {folded}")
    return True


def _float_constants(graph: Graph) -> bool:
    """Dequantized constants (weights and biases of the products left in float) as float32 constants:
    the float kernels pack constant weights, and the values are the dequantize's own."""
    from graphc.ops.quantize import dequantize_linear

    changed = False
    for op in graph.ops():
        if op.type != "dequantize_linear" or not all(v in graph.constants for v in op.inputs):
            continue
        working_on(op)
        arrays = [graph.constants[v] for v in op.inputs]
        value = dequantize_linear(*arrays, axis=int(op.attrs.get("axis", -1)))
        const = graph.add_constant(graph.unique_name(f"{op.inputs[0]}/float"), value, layer=op.layer)
        replace_value(graph, op.outputs[0], const)
        changed = True
    return changed


MOVEMENT = ("slice", "reshape", "transpose", "concat")
# ops that commute with a per-tensor dequantize of positive scale, which is non-decreasing: the maximum of a
# window is the same element before and after it (padding never wins: every window holds a real element)
MONOTONE = ("max_pool",)


def _same_params(graph: Graph, ds: list[Op]) -> bool:
    first = [graph.constants[v] for v in ds[0].inputs[1:]]
    return all(all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(first, (graph.constants[v] for v in
               d.inputs[1:]))) and graph.type_of(d.inputs[0]).dtype == graph.type_of(ds[0].inputs[0]).dtype
               for d in ds[1:])


def _sink_dequantize(graph: Graph) -> bool:
    """``move(dequantize(q))`` as ``dequantize(move(q))`` for the data movement ops (per-tensor parameters,
    the same for every input of a concatenation) and max pooling (a positive scale): the copies move
    bytes, not floats, a pooled tensor is dequantized after it shrank, and the dequantize of a tensor
    that is only sliced, pooled or concatenated disappears."""
    changed, progress = False, True
    while progress:
        progress = False
        for op in graph.ops():
            if op.type not in MOVEMENT + MONOTONE or not graph.has_op(op.id):
                continue
            ds = [_dequantized(graph, v) for v in op.inputs]
            if any(d is None or not _per_tensor(graph, d) for d in ds) or not _same_params(graph, ds):
                continue
            if op.type in MONOTONE and not float(graph.constants[ds[0].inputs[1]]) > 0:
                continue
            working_on(op)
            moved = emit(graph, op.type, *[d.inputs[0] for d in ds], layer=op.layer, **op.attrs)
            y = emit(graph, "dequantize_linear", moved, ds[0].inputs[1], ds[0].inputs[2], layer=op.layer)
            replace_value(graph, op.outputs[0], y)
            note(f"dequantize moved after {op.type}")
            progress = changed = True
    return changed


def _quantized_tables(graph: Graph) -> bool:
    """``quantize(gather(table, ids))`` (per tensor) as ``gather(quantize(table), ids)`` with the table
    quantized once, at build time: an embedding's rows are looked up as bytes."""
    from graphc.ops.quantize import quantize_linear

    changed = False
    for op in graph.ops():
        if op.type != "quantize_linear" or not graph.has_op(op.id) or not _per_tensor(graph, op):
            continue
        gather = graph.producer(op.inputs[0])
        if (gather is None or gather.type != "gather" or gather.inputs[0] not in graph.constants
                or op.inputs[1] not in graph.constants or op.inputs[2] not in graph.constants):
            continue
        working_on(op)
        table = quantize_linear(graph.constants[gather.inputs[0]], graph.constants[op.inputs[1]],
                                graph.constants[op.inputs[2]])
        name = graph.add_constant(graph.unique_name(f"{gather.inputs[0]}/quantized"), table, layer=gather.layer)
        y = emit(graph, "gather", name, *gather.inputs[1:], layer=gather.layer, **gather.attrs)
        replace_value(graph, op.outputs[0], y)
        note("an embedding table quantized at build time")
        changed = True
    return changed


def _requantize_pairs(graph: Graph) -> bool:
    """``quantize(dequantize(q))`` (per tensor) as one ``requantize_linear``, or as ``q`` itself when both
    quantizations are the same."""
    changed = False
    for op in graph.ops():
        if op.type != "quantize_linear" or not graph.has_op(op.id):
            continue
        d = _dequantized(graph, op.inputs[0])
        if (d is None or op.inputs[1] not in graph.constants or op.inputs[2] not in graph.constants
                or not _per_tensor(graph, d) or not _per_tensor(graph, op)
                or graph.type_of(d.inputs[0]).dtype not in ("uint8", "int8")):
            continue
        working_on(op)
        if _same_params(graph, [d, op]) and graph.type_of(d.inputs[0]).dtype == graph.type_of(op.outputs[0]).dtype \
                and op.outputs[0] not in graph.outputs:
            replace_value(graph, op.outputs[0], d.inputs[0])
        else:
            y = emit(graph, "requantize_linear", d.inputs[0], d.inputs[1], d.inputs[2], op.inputs[1], op.inputs[2],
                     layer=op.layer)
            replace_value(graph, op.outputs[0], y)
        note("quantize of a dequantize made one requantize")
        changed = True
    return changed


def _quantized_adds(graph: Graph) -> bool:
    """``quantize(dequantize(a) + dequantize(b))`` (per tensor, operands of the sum's shape) as one
    ``qlinear_add``: the residual add of two quantized branches reads and writes bytes, not floats."""
    changed = False
    for op in graph.ops():
        if op.type != "quantize_linear" or not graph.has_op(op.id) or not _per_tensor(graph, op):
            continue
        add = graph.producer(op.inputs[0])
        if (add is None or add.type != "add" or add.outputs[0] in graph.outputs or len(graph.consumers(add.outputs[0]))
                != 1 or op.inputs[1] not in graph.constants or op.inputs[2] not in graph.constants):
            continue
        ds = [_dequantized(graph, v) for v in add.inputs]
        shape = graph.type_of(add.outputs[0]).shape
        if any(d is None or not _per_tensor(graph, d) or graph.type_of(d.inputs[0]).dtype not in ("uint8", "int8")
               or graph.type_of(d.inputs[0]).shape != shape for d in ds):
            continue
        working_on(op)
        y = emit(graph, "qlinear_add", *ds[0].inputs, *ds[1].inputs, op.inputs[1], op.inputs[2], layer=add.layer)
        replace_value(graph, op.outputs[0], y)
        note("a quantized sum of dequantized tensors made one qlinear_add")
        changed = True
    return changed


@register_pass("fold_qdq")
def fold_qdq(graph: Graph) -> bool:
    """Fold dequantize -> product (+ bias, relu) -> quantize into qlinear_matmul / qlinear_conv; the
    dequantized constants the float ops still read become float constants."""
    changed = False
    for op in graph.ops():
        if op.type in PRODUCTS and graph.has_op(op.id) and graph.type_of(op.outputs[0]).dtype == "float32":
            working_on(op)
            changed |= _fold(graph, op)
    changed |= _float_constants(graph)
    changed |= _sink_dequantize(graph)
    changed |= _requantize_pairs(graph)
    changed |= _quantized_adds(graph)
    changed |= _quantized_tables(graph)
    working_on(None)
    return changed


def fold_integer_products(graph: Graph) -> Graph:
    """A copy of the quantized ``graph`` with its products folded into integer ops (see the module docstring),
    without the constants only the folded ops read (float copies of weights, their scales): a library packs
    every constant of its graph."""
    folded = graph.copy()
    folded.name = graph.name
    fold_qdq(folded)
    dce(folded)
    return folded
