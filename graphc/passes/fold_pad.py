"""Zero padding folded into the window op that reads it.

``ZeroPadding2D`` followed by a 'valid' convolution (the stems of keras.applications'
ResNet, DenseNet, MobileNet and EfficientNet) pads the image in a copy of its own, which the
convolution then reads. Convolutions already pad with zeros (``pads`` attribute), so a
``pad`` with value 0 on spatial axes only folds into the reader: ``conv(pad(x, p); pads=q)``
is ``conv(x; pads=p + q)``, for ``conv``, ``fused_conv`` and ``fused_separable_conv`` (whose
depthwise half pads with zeros too).

``max_pool`` pads with -inf, not zeros, so the same fold is only exact when ``x`` is known
non-negative (a ReLU's output, as in ResNet50 and DenseNet: ``relu -> ZeroPadding2D ->
MaxPooling2D``) and every window keeps a real element (pads smaller than the window, the
op's own rule): the window's maximum is then at least 0 either way. ``avg_pool`` leaves
padding out of its count, so a zero pad never folds into it.

A pad read through a transpose (channels_first layers lower to pad, transpose to channels-last,
window op) is moved after it first: ``transpose(pad(x, p)) = pad(transpose(x), p permuted)``.
The ``pad`` op disappears once no other op reads it.
"""

from __future__ import annotations

from graphc.ir import dims
from graphc.ir.graph import Graph, Op
from graphc.ops.conv import pads_attr
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import emit, replace_value

CONV_OPS = ("conv", "fused_conv", "fused_separable_conv")
NON_NEGATIVE = ("sigmoid", "exp", "softplus", "square", "abs", "sqrt", "hard_sigmoid")


def spatial_zero_pads(graph: Graph, op: Op) -> tuple | None:
    """The (before, after) pairs of a zero ``pad`` that pads only the spatial axes of a
    (batch, *spatial, channels) tensor, else None."""
    if op.type != "pad" or float(op.attrs.get("value", 0.0)) != 0.0:
        return None
    pads = tuple(tuple(p) for p in op.attrs["pads"])
    if len(pads) < 3 or pads[0] != (0, 0) or pads[-1] != (0, 0):
        return None
    return pads[1:-1]


def _relu_non_negative(attrs) -> bool:
    max_value = dict(attrs).get("max_value")
    return (float(dict(attrs).get("negative_slope", 0.0)) == 0.0 and float(dict(attrs).get("threshold", 0.0)) >= 0.0
            and (max_value is None or max_value >= 0))


def non_negative(graph: Graph, value: str) -> bool:
    """Whether ``value`` is known to hold no negative number (the output of a ReLU and the like)."""
    op = graph.producer(value)
    if op is None:
        return False
    if op.type == "relu":
        return _relu_non_negative(op.attrs)
    if op.type in NON_NEGATIVE:
        return True
    if op.type in ("fused_matmul", "fused_conv", "fused_separable_conv"):
        name, pairs = (("post_activation", op.attrs.get("post_activation_attrs", ()))
                       if op.attrs.get("has_residual") else ("activation", op.attrs.get("activation_attrs", ())))
        act = op.attrs.get(name, "linear")
        return act in NON_NEGATIVE or (act == "relu" and _relu_non_negative(pairs))
    return False


def _combined(pads, extra) -> tuple:
    return tuple((dims.add(b, eb), dims.add(a, ea)) for (b, a), (eb, ea) in zip(pads, extra))


def _fold_into(graph: Graph, reader: Op, x: str, extra: tuple) -> str | None:
    """The reader recomputed on ``x`` with ``extra`` padding, or None where that would not be exact."""
    nsp = len(extra)
    pads = pads_attr(reader.attrs.get("pads"), nsp, reader.type)
    combined = _combined(pads, extra)
    if reader.type == "max_pool":
        kernel = tuple(reader.attrs["kernel"])
        if not non_negative(graph, x):
            return None
        if any(not isinstance(p, int) or p >= k for pair, k in zip(combined, kernel) for p in pair):
            return None
    attrs = {**reader.attrs, "pads": combined}
    return emit(graph, reader.type, x, *reader.inputs[1:], layer=reader.layer, **attrs)


def _through_transposes(graph: Graph, op: Op) -> list[Op]:
    """Pads moved after the transposes that read ``op`` and feed a window op (as channels_first layers
    lower: pad, transpose to channels-last, conv): ``transpose(pad(x, p)) = pad(transpose(x), p permuted)``."""
    moved = []
    padded, x = op.outputs[0], op.inputs[0]
    for reader, _ in list(graph.consumers(padded)):
        if reader.type != "transpose" or not graph.has_op(reader.id):
            continue
        if not any(r.type in CONV_OPS + ("max_pool",) and i == 0 for r, i in graph.consumers(reader.outputs[0])):
            continue
        perm = tuple(reader.attrs["perm"])
        pads = tuple(tuple(op.attrs["pads"])[p] for p in perm)
        turned = emit(graph, "transpose", x, layer=reader.layer, perm=perm)
        new = emit(graph, "pad", turned, layer=op.layer, pads=pads, value=op.attrs.get("value", 0.0))
        replace_value(graph, reader.outputs[0], new)
        moved.append(graph.producer(new))
        note("pad moved after a transpose")
    return moved


def _fold(graph: Graph, op: Op) -> bool:
    extra = spatial_zero_pads(graph, op)
    if extra is None:
        return False
    changed = False
    padded, x = op.outputs[0], op.inputs[0]
    for reader, index in list(graph.consumers(padded)):
        if index != 0 or reader.type not in CONV_OPS + ("max_pool",) or not graph.has_op(reader.id):
            continue
        folded = _fold_into(graph, reader, x, extra)
        if folded is None:
            continue
        replace_value(graph, reader.outputs[0], folded)
        note(f"pad folded into {reader.type}")
        changed = True
    return changed


@register_pass("fold_pad")
def fold_pad(graph: Graph) -> bool:
    """Fold zero padding into the convolutions (and, on non-negative inputs, max pools) that read it."""
    changed = False
    for op in graph.ops():
        if op.type != "pad" or not graph.has_op(op.id):
            continue
        working_on(op)
        moved = _through_transposes(graph, op)
        changed |= bool(moved)
        for pad in [op, *moved]:
            if graph.has_op(pad.id):
                changed |= _fold(graph, pad)
    working_on(None)
    return changed
