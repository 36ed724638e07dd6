"""A uniform view of the ops that compute a product with an optional epilogue.

``matmul`` (with a 2-D right operand), ``conv`` and the fused ops of ``graphc.ops.fused``
all read as a :class:`Product`: the fused op type they are (or become), their main
operands, their convolution attributes, and their epilogue (bias, activation, residual,
post-activation). Fusion and folding passes edit a ``Product`` and emit it back with
:func:`emit_product`, so each rewrite is written once for every kind of product.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from graphc.ir.graph import Graph, Op
from graphc.ops.fused import EPILOGUE_ATTRS, FUSED_OPS, epilogue_inputs
from graphc.passes.pattern import emit

PRODUCT_TYPES = ("matmul", "conv", *FUSED_OPS)
_CONV_KEYS = ("strides", "dilations", "pads", "groups")


@dataclass
class Product:
    """A product op read as ``fused_type(main..., [bias], [residual]; conv attrs, epilogue)``."""

    fused_type: str
    main: list[str]
    conv: dict[str, Any] = field(default_factory=dict)
    bias: str | None = None
    residual: str | None = None
    activation: str = "linear"
    activation_attrs: tuple = ()
    post_activation: str = "linear"
    post_activation_attrs: tuple = ()
    layer: str | None = None

    @property
    def weight_index(self) -> int:
        """Index in ``main`` of the weight whose last axis is the output channels."""
        return len(self.main) - 1

    @property
    def weight(self) -> str:
        return self.main[self.weight_index]

    @property
    def linear(self) -> bool:
        """No activation and no residual: the output is an affine function of the product."""
        return self.activation == "linear" and self.residual is None

    def with_(self, **changes: Any) -> Product:
        return replace(self, **changes)


def as_product(graph: Graph, op: Op) -> Product | None:
    """``op`` as a :class:`Product`, or None if it is not one."""
    if op.type == "matmul":
        if graph.type_of(op.inputs[1]).rank != 2:
            return None
        return Product("fused_matmul", list(op.inputs), layer=op.layer)
    if op.type == "conv":
        conv = {k: op.attrs.get(k) for k in _CONV_KEYS}
        if conv["groups"] is None:
            conv["groups"] = 1
        return Product("fused_conv", list(op.inputs), conv, layer=op.layer)
    if op.type in FUSED_OPS:
        n = FUSED_OPS[op.type]
        attrs = {**EPILOGUE_ATTRS, **op.attrs}
        bias, residual = epilogue_inputs(n, attrs, len(op.inputs), op.type)
        return Product(
            op.type, list(op.inputs[:n]),
            {k: attrs[k] for k in _CONV_KEYS} if op.type != "fused_matmul" else {},
            bias=op.inputs[bias] if bias is not None else None,
            residual=op.inputs[residual] if residual is not None else None,
            activation=attrs["activation"], activation_attrs=tuple(attrs["activation_attrs"]),
            post_activation=attrs["post_activation"],
            post_activation_attrs=tuple(attrs["post_activation_attrs"]), layer=op.layer)
    return None


def product_of(graph: Graph, value: str) -> Product | None:
    op = graph.producer(value)
    return None if op is None or len(op.outputs) != 1 else as_product(graph, op)


def emit_product(graph: Graph, p: Product, *, plain: bool = False, layer: str | None = None) -> str:
    """Add ``p`` to the graph as one fused op (``plain``: as ``matmul``/``conv`` if it has no epilogue)."""
    layer = layer if layer is not None else p.layer
    no_epilogue = p.bias is None and p.residual is None and p.activation == "linear"
    if plain and no_epilogue and p.fused_type in ("fused_matmul", "fused_conv"):
        base = "matmul" if p.fused_type == "fused_matmul" else "conv"
        return emit(graph, base, *p.main, layer=layer, name=layer, **p.conv)
    inputs = list(p.main)
    if p.bias is not None:
        inputs.append(p.bias)
    if p.residual is not None:
        inputs.append(p.residual)
    return emit(graph, p.fused_type, *inputs, layer=layer, name=layer, **p.conv,
                has_bias=p.bias is not None, activation=p.activation, activation_attrs=p.activation_attrs,
                has_residual=p.residual is not None, post_activation=p.post_activation,
                post_activation_attrs=p.post_activation_attrs if p.residual is not None else ())


def kind(graph: Graph, p: Product) -> str:
    """A short name for the main product: matmul, conv, depthwise_conv or separable_conv."""
    if p.fused_type == "fused_matmul":
        return "matmul"
    if p.fused_type == "fused_separable_conv":
        return "separable_conv"
    w = graph.type_of(p.weight)
    groups = p.conv.get("groups") or 1
    return "depthwise_conv" if groups > 1 and w.shape[-2] == 1 else "conv"


def signature(graph: Graph, p: Product) -> str:
    """The fusion a product op stands for, e.g. ``conv+bias+relu+add+relu``."""
    parts = [kind(graph, p)]
    if p.bias is not None:
        parts.append("bias")
    if p.activation != "linear":
        parts.append(p.activation)
    if p.residual is not None:
        parts.append("add")
        if p.post_activation != "linear":
            parts.append(p.post_activation)
    return "+".join(parts)


def fusion_summary(graph: Graph) -> dict[str, int]:
    """How many fused ops of each signature the graph holds."""
    out: dict[str, int] = {}
    for op in graph.ops():
        if op.type in FUSED_OPS:
            p = as_product(graph, op)
            assert p is not None
            key = signature(graph, p)
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))
