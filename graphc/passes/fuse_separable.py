"""Separable convolution: the pointwise half runs behind the depthwise half, in one op.

After ``conv1x1_to_matmul`` a SeparableConv2D is ``matmul(conv(x, dw; groups=C), pw)``: a
depthwise convolution (kernel (*k, 1, C*M), groups = C) whose only reader is a matmul with
a 2-D pointwise weight. Both become one ``fused_separable_conv(x, dw, pw)``, so a backend
can multiply each tile of the depthwise result by ``pw`` while it is still in cache instead
of writing the whole depthwise tensor out and reading it back. Epilogue fusion later adds
the bias and activation.
"""

from __future__ import annotations

from graphc.ir.graph import Graph, Op
from graphc.passes.manager import note, register_pass
from graphc.passes.pattern import Match, Pat, Var, emit, rewrite

# a depthwise convolution of fewer channels than this (one output per channel) stays an op of its own: the
# native depthwise kernel runs its rows as flat runs of lanes (kernels/depthwise_flat.py), which the fused
# kernel's tile-by-tile fill cannot (an RGB input's 3 channels in 16-lane vectors), and the product over so
# few channels reads back little (separable_conv_bn's first layer on a Zen 4, 6 images: 35 -> 27 us)
MIN_FUSED_CHANNELS = 8


def _depthwise(graph: Graph, op: Op) -> bool:
    x, w = graph.type_of(op.inputs[0]), graph.type_of(op.inputs[1])
    groups = op.attrs.get("groups") or 1
    return w.shape[-2] == 1 and x.shape[-1] == groups and not _few_channels(x.shape[-1], w.shape[-1])


def _few_channels(C, n_out) -> bool:
    return isinstance(C, int) and C < MIN_FUSED_CHANNELS and n_out == C


SEPARABLE = Pat("matmul", Pat("conv", Var("x"), Var("dw"), name="dw_conv", where=_depthwise),
                Var("pw", where=lambda g, v: g.type_of(v).rank == 2))


def _fuse(graph: Graph, m: Match) -> str:
    conv = m.op("dw_conv")
    note("depthwise conv + pointwise matmul")
    attrs = {k: conv.attrs.get(k) for k in ("strides", "dilations", "pads", "groups")}
    return emit(graph, "fused_separable_conv", m["x"], m["dw"], m["pw"], layer=conv.layer, name=conv.layer,
                **attrs)


@register_pass("fuse_separable_conv")
def fuse_separable_conv(graph: Graph) -> bool:
    """Fuse a depthwise conv with the pointwise matmul that follows it."""
    return rewrite(graph, [(SEPARABLE, _fuse)])
