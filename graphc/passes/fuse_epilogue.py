"""Epilogue fusion: a product (matmul, conv, depthwise or separable conv) absorbs what follows it.

Grows a fused op one consumer at a time, in topological order, while the value in between
has no other reader:

    product(x, w)            + bias_add(., b)    -> fused(x, w, b;  has_bias)
    fused (no activation)    + activation(.)     -> fused(...;      activation)
    fused (no residual)      + add(., r)         -> fused(..., r;   has_residual)   r: same type
    fused (residual)         + activation(.)     -> fused(...;      post_activation)

so ``relu(add(relu(bias_add(conv(x, w), b)), r))`` becomes one ``fused_conv``. The order of
the epilogue is fixed (bias, activation, residual, post-activation; see ``graphc.ops.fused``),
so a step that would apply out of that order (a bias after the activation, a second
residual) is not fused. Activations are the elementwise ones of ``elementwise.UNARY``.

One memory rule: a product that absorbs ``add(., r)`` can only run once ``r`` exists. When
``r`` is computed from the product's own input (a projection shortcut beside the main branch
of a residual block), that input must then stay alive while the whole main branch runs;
if it is an intermediate larger than the product's result (the strided 1x1 shortcuts of
Xception and ResNet), the add is left unfused so that the shortcut can run first.
"""

from __future__ import annotations

from graphc.ir import dims
from graphc.ir.graph import Graph, Op
from graphc.ops.fused import activation_spec
from graphc.passes.manager import note, register_pass, working_on
from graphc.passes.pattern import replace_value, single_use
from graphc.passes.products import Product, emit_product, kind, product_of


def _fusable_input(graph: Graph, value: str) -> Product | None:
    if not single_use(graph, value):
        return None
    return product_of(graph, value)


_VIEWS = ("slice", "reshape", "squeeze", "expand_dims", "identity", "dropout")


def _bytes(graph: Graph, value: str) -> int:
    """Size with every free dimension 1 (sizes are compared, not used)."""
    t = graph.type_of(value)
    return t.nbytes({s: 1 for d in t.shape for s in dims.symbols(d)})


def _depends_on(graph: Graph, value: str, ancestor: str) -> bool:
    seen, work = set(), [value]
    while work:
        v = work.pop()
        if v == ancestor:
            return True
        op = graph.producer(v)
        if op is not None and op.id not in seen:
            seen.add(op.id)
            work.extend(op.inputs)
    return False


def _residual_extends_a_lifetime(graph: Graph, p: Product, product_out: str, r: str) -> bool:
    x = p.main[0]
    while (op := graph.producer(x)) is not None and op.type in _VIEWS:  # the storage a view reads
        x = op.inputs[0]
    if graph.values[x].kind != "op" or _bytes(graph, x) <= _bytes(graph, product_out):
        return False
    return _depends_on(graph, r, x)


def _absorb(graph: Graph, op: Op) -> tuple[Product, str] | None:
    """The grown product and the event name, if ``op`` can join its producer's epilogue."""
    if op.type == "bias_add":
        x, b = op.inputs
        rank = graph.type_of(x).rank
        p = _fusable_input(graph, x)
        if p is None or op.attrs.get("axis", -1) % rank != rank - 1:
            return None
        if p.bias is None and p.activation == "linear" and p.residual is None:
            return p.with_(bias=b), "bias"
        return None
    spec = activation_spec(op.type, op.attrs)
    if spec is not None:
        p = _fusable_input(graph, op.inputs[0])
        if p is None:
            return None
        if p.residual is None and p.activation == "linear":
            return p.with_(activation=spec[0], activation_attrs=spec[1]), spec[0]
        if p.residual is not None and p.post_activation == "linear":
            return p.with_(post_activation=spec[0], post_activation_attrs=spec[1]), f"add+{spec[0]}"
        return None
    if op.type == "add":
        out_type = graph.type_of(op.outputs[0])
        for a, r in (op.inputs, op.inputs[::-1]):
            p = _fusable_input(graph, a)
            if p is None or p.residual is not None or a == r:
                continue
            if graph.type_of(a) == out_type and graph.type_of(r) == out_type:
                if _residual_extends_a_lifetime(graph, p, a, r):
                    note("add left unfused (memory)")
                    continue
                return p.with_(residual=r), "add"
    return None


@register_pass("fuse_epilogue")
def fuse_epilogue(graph: Graph) -> bool:
    """Fuse bias, activation and residual add (and a final activation) into the product before them."""
    changed = False
    for op in graph.ops():
        if not graph.has_op(op.id) or len(op.outputs) != 1:
            continue
        working_on(op)
        grown = _absorb(graph, op)
        if grown is None:
            continue
        p, event = grown
        note(f"{kind(graph, p)}+{event}")
        replace_value(graph, op.outputs[0], emit_product(graph, p))
        changed = True
    working_on(None)
    return changed
