"""Fused ops: a matrix product or convolution with its epilogue, and per-channel scale-and-shift.

These ops are introduced by the optimizer (``graphc.passes``), never by the front end. Each
one computes a *main* product and then an *epilogue*, in this order, on the channels-last
result ``y`` (channels = the last axis)::

    y = main(...)                       # matmul, conv, or depthwise conv then pointwise matmul
    y = y + bias                        # if has_bias: bias is (channels,)
    y = activation(y, **activation_attrs)
    y = y + residual                    # if has_residual: residual has exactly y's type
    y = post_activation(y, **post_activation_attrs)   # only applied with a residual

Inputs are positional: the main operands, then ``bias`` if ``has_bias``, then ``residual``
if ``has_residual``. ``activation``/``post_activation`` name an elementwise activation of
``graphc.ops.elementwise.UNARY`` (or ``"linear"``, the identity); their attributes are a
tuple of ``(name, value)`` pairs (``(("max_value", 6.0),)`` for relu6) so that attributes
stay hashable and serializable.

- ``fused_matmul(x, w[, bias][, residual])``: main = ``x @ w`` with ``w`` 2-D (K, N): ``x``
  may have any rank >= 1 and its last axis is contracted, so an NHWC tensor is a matrix of
  pixels (this is how a 1x1 convolution runs).
- ``fused_conv(x, w[, bias][, residual]; strides, dilations, pads, groups)``: main = the
  ``conv`` op with the same attributes (NHWC input, kernel (*k, C/groups, O)).
- ``fused_separable_conv(x, dw, pw[, bias][, residual]; strides, dilations, pads, groups)``:
  main = ``conv(x, dw; ..., groups)`` (the depthwise half, kernel (*k, 1, C*M), groups = C)
  followed by ``@ pw`` (the pointwise half, (C*M, O)) without materializing the depthwise
  result in between (a backend computes a tile of it and multiplies it at once).
- ``scale_shift(x, scale, shift; axis)``: ``x * scale + shift`` with ``scale``/``shift``
  vectors along ``axis`` (what an inference BatchNorm is once its statistics are folded).

A backend that has no fused kernel may always run the unfused sequence above; the NumPy
references here do exactly that and are the oracle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape, norm_axis, require_float, same_dtype
from graphc.ops.elementwise import UNARY, apply_activation
from graphc.ops.registry import OpDef, ShapeError, get, register

__all__ = ["EPILOGUE_ATTRS", "FUSED_OPS", "apply_epilogue", "epilogue_inputs", "activation_spec"]

EPILOGUE_ATTRS: dict[str, Any] = {
    "has_bias": False,
    "activation": "linear",
    "activation_attrs": (),
    "has_residual": False,
    "post_activation": "linear",
    "post_activation_attrs": (),
}

# op name -> number of main operands
FUSED_OPS = {"fused_matmul": 2, "fused_conv": 2, "fused_separable_conv": 3}


def activation_spec(op_type: str, attrs: Mapping[str, Any]) -> tuple[str, tuple] | None:
    """(name, attribute pairs) if an IR op of ``op_type`` is an elementwise activation, else None."""
    if op_type not in UNARY:
        return None
    defaults = UNARY[op_type][1]
    pairs = tuple(sorted((k, v) for k, v in attrs.items() if k in defaults and v != defaults[k]))
    return op_type, pairs


def _check_activation(name: str, pairs: Any, which: str, op: str) -> None:
    if name != "linear" and name not in UNARY:
        raise ShapeError(f"{op}: unknown {which} {name!r}; use 'linear' or one of {', '.join(sorted(UNARY))}")
    try:
        keys = [k for k, _ in pairs]
    except (TypeError, ValueError):
        raise ShapeError(f"{op}: {which}_attrs must be (name, value) pairs, got {pairs!r}") from None
    allowed = UNARY[name][1] if name in UNARY else {}
    unknown = set(keys) - set(allowed)
    if unknown:
        raise ShapeError(f"{op}: {which} {name!r} has no attribute(s) {sorted(unknown)}")


def epilogue_inputs(num_main: int, attrs: Mapping[str, Any], n_inputs: int, op: str) -> tuple[int | None, int | None]:
    """Positions of (bias, residual) among an op's inputs; checks the input count."""
    want = num_main + int(bool(attrs["has_bias"])) + int(bool(attrs["has_residual"]))
    if n_inputs != want:
        raise ShapeError(f"{op} with has_bias={attrs['has_bias']}, has_residual={attrs['has_residual']} "
                         f"takes {want} inputs, got {n_inputs}")
    bias = num_main if attrs["has_bias"] else None
    residual = num_main + int(bool(attrs["has_bias"])) if attrs["has_residual"] else None
    return bias, residual


def _check_epilogue(types: list[TensorType], y: TensorType, num_main: int, attrs: Mapping[str, Any],
                    op: str) -> None:
    bias, residual = epilogue_inputs(num_main, attrs, len(types), op)
    same_dtype(types, f"{op} operands")
    _check_activation(attrs["activation"], attrs["activation_attrs"], "activation", op)
    _check_activation(attrs["post_activation"], attrs["post_activation_attrs"], "post_activation", op)
    if bias is not None:
        b = types[bias]
        if b.rank != 1 or not dims.compatible(b.shape[0], y.shape[-1]):
            raise ShapeError(f"{op}: bias of shape {fmt_shape(b.shape)} does not match the "
                             f"{y.shape[-1]} output channels of {fmt_shape(y.shape)}")
    if residual is not None:
        r = types[residual]
        if r.rank != y.rank or not all(dims.compatible(a, b) for a, b in zip(r.shape, y.shape)):
            raise ShapeError(f"{op}: residual of shape {fmt_shape(r.shape)} does not have the output's "
                             f"shape {fmt_shape(y.shape)}")


def apply_epilogue(y: np.ndarray, bias: np.ndarray | None, residual: np.ndarray | None, *,
                   activation: str = "linear", activation_attrs=(), post_activation: str = "linear",
                   post_activation_attrs=(), **_: Any) -> np.ndarray:
    """The epilogue (bias, activation, residual add, post-activation) on channels-last ``y``."""
    if bias is not None:
        y = y + bias
    y = apply_activation(activation, y, **dict(activation_attrs))
    if residual is not None:
        y = y + residual
        y = apply_activation(post_activation, y, **dict(post_activation_attrs))
    return y


def _epilogue_args(arrays, num_main: int, attrs: Mapping[str, Any]):
    bias, residual = epilogue_inputs(num_main, attrs, len(arrays), "fused op")
    return (arrays[bias] if bias is not None else None,
            arrays[residual] if residual is not None else None)


def _epilogue_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in EPILOGUE_ATTRS}


# ---------------------------------------------------------------------------- fused_matmul
def _fused_matmul_infer(types, **attrs):
    x, w = types[0], types[1]
    require_float(x, "fused_matmul input")
    if w.rank != 2:
        raise ShapeError(f"fused_matmul weight must be 2-D (K, N), got {fmt_shape(w.shape)}")
    y = get("matmul").infer_types([x, w], {})[0]
    _check_epilogue(types, y, 2, attrs, "fused_matmul")
    return y


def pixels_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for 2-D ``w``, as one GEMM over all leading axes of ``x`` (its rows)."""
    if x.ndim <= 2:
        return np.matmul(x, w)
    return np.matmul(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + (w.shape[-1],))


def _fused_matmul(*arrays, **attrs):
    x, w = arrays[0], arrays[1]
    bias, residual = _epilogue_args(arrays, 2, attrs)
    y = apply_epilogue(pixels_matmul(x, w), bias, residual, **attrs)
    return y.astype(x.dtype, copy=False)


register(OpDef("fused_matmul", _fused_matmul_infer, _fused_matmul, attrs=dict(EPILOGUE_ATTRS),
               num_inputs=(2, 4), fusion_kind="opaque",
               doc="x @ w (w 2-D, x's last axis contracted) then the epilogue: + bias, activation, "
                   "+ residual, post_activation (see graphc.ops.fused)."))


# ---------------------------------------------------------------------------- fused_conv
_CONV_ATTRS = {"strides": None, "dilations": None, "pads": None, "groups": 1}


def _conv_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in _CONV_ATTRS}


def _fused_conv_infer(types, **attrs):
    y = get("conv").infer_types(types[:2], _conv_attrs(attrs))[0]
    _check_epilogue(types, y, 2, attrs, "fused_conv")
    return y


def _fused_conv(*arrays, bindings=None, **attrs):
    x, w = arrays[0], arrays[1]
    bias, residual = _epilogue_args(arrays, 2, attrs)
    y = get("conv").reference(x, w, bindings=bindings, **_conv_attrs(attrs))
    return apply_epilogue(y, bias, residual, **attrs).astype(x.dtype, copy=False)


register(OpDef("fused_conv", _fused_conv_infer, _fused_conv, attrs={**_CONV_ATTRS, **EPILOGUE_ATTRS},
               num_inputs=(2, 4), fusion_kind="opaque", uses_dims=True,
               doc="conv(x, w; strides, dilations, pads, groups) then the epilogue: + bias, activation, "
                   "+ residual, post_activation (see graphc.ops.fused)."))


# ---------------------------------------------------------------------------- fused_separable_conv
def _fused_separable_infer(types, **attrs):
    x, dw, pw = types[:3]
    d = get("conv").infer_types([x, dw], _conv_attrs(attrs))[0]
    if dw.shape[-2] != 1:
        raise ShapeError(f"fused_separable_conv: the depthwise kernel {fmt_shape(dw.shape)} with "
                         f"groups={attrs['groups']} is not depthwise (kernel (*k, 1, C*M), groups = C)")
    if pw.rank != 2 or pw.shape[0] != d.shape[-1]:
        raise ShapeError(f"fused_separable_conv: pointwise kernel {fmt_shape(pw.shape)} must be "
                         f"({d.shape[-1]}, out_channels)")
    y = TensorType(x.dtype, d.shape[:-1] + (pw.shape[1],))
    _check_epilogue(types, y, 3, attrs, "fused_separable_conv")
    return y


def _fused_separable(*arrays, bindings=None, **attrs):
    x, dw, pw = arrays[:3]
    bias, residual = _epilogue_args(arrays, 3, attrs)
    d = get("conv").reference(x, dw, bindings=bindings, **_conv_attrs(attrs))
    return apply_epilogue(pixels_matmul(d, pw), bias, residual, **attrs).astype(x.dtype, copy=False)


register(OpDef("fused_separable_conv", _fused_separable_infer, _fused_separable,
               attrs={**_CONV_ATTRS, **EPILOGUE_ATTRS}, num_inputs=(3, 5), fusion_kind="opaque",
               uses_dims=True,
               doc="Depthwise conv(x, dw; strides, dilations, pads, groups=C) then @ pw (C*M, O), then the "
                   "epilogue: + bias, activation, + residual, post_activation (see graphc.ops.fused)."))


# ---------------------------------------------------------------------------- scale_shift
def _scale_shift_infer(types, *, axis):
    x, scale, shift = types
    require_float(x, "scale_shift input")
    same_dtype(types, "scale_shift operands")
    ax = norm_axis(axis, x.rank)
    for name, t in (("scale", scale), ("shift", shift)):
        if t.rank != 1 or not dims.compatible(t.shape[0], x.shape[ax]):
            raise ShapeError(f"scale_shift {name} of shape {fmt_shape(t.shape)} does not match axis {axis} "
                             f"(size {x.shape[ax]}) of input {fmt_shape(x.shape)}")
    return x


def _scale_shift(x, scale, shift, *, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return (x * scale.reshape(shape) + shift.reshape(shape)).astype(x.dtype, copy=False)


register(OpDef("scale_shift", _scale_shift_infer, _scale_shift, attrs={"axis": -1},
               num_inputs=3, fusion_kind="broadcast",
               doc="x * scale + shift, with scale and shift vectors along one axis."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext). The main product maps to
# MatMul or Conv (the bias rides in Conv's B input); the epilogue to the activations' own
# mappings and Add. A convolution's activation is applied in ONNX's NCHW layout, before the
# transpose back, so that the transposes between two fused convolutions cancel. A separable
# convolution is a grouped Conv followed by a 1x1 Conv.

def _fused_matmul_to_onnx(ctx, op):
    from graphc.ops.elementwise import onnx_activation

    a = ctx.attrs
    bias, residual = epilogue_inputs(2, a, ctx.num_inputs, op.type)
    steps = []
    if bias is not None:
        steps.append(lambda v, out: ctx.node("Add", [v, ctx.input_name(bias)], out))
    if a["activation"] != "linear":
        steps.append(lambda v, out: onnx_activation(ctx, a["activation"], v, a["activation_attrs"], out))
    if residual is not None:
        steps.append(lambda v, out: ctx.node("Add", [v, ctx.input_name(residual)], out))
        if a["post_activation"] != "linear":
            steps.append(lambda v, out: onnx_activation(ctx, a["post_activation"], v, a["post_activation_attrs"],
                                                        out))
    y = ctx.node("MatMul", [ctx.input_name(0), ctx.input_name(1)], None if steps else ctx.output_name(0))
    for k, step in enumerate(steps):
        y = step(y, ctx.output_name(0) if k == len(steps) - 1 else None)


def _conv_epilogue(ctx, op, main_nchw, num_main: int) -> None:
    """``main_nchw(bias)`` (an NCHW result), then activation, transpose back, residual add."""
    from graphc.ops.conv import onnx_channels_last
    from graphc.ops.elementwise import onnx_activation

    a = ctx.attrs
    rank = ctx.input_type(0).rank
    bias, residual = epilogue_inputs(num_main, a, ctx.num_inputs, op.type)
    y = main_nchw(ctx.input_name(bias) if bias is not None else None)
    y = onnx_activation(ctx, a["activation"], y, a["activation_attrs"])
    if residual is None:
        onnx_channels_last(ctx, y, rank, ctx.output_name(0))
        return
    y = onnx_channels_last(ctx, y, rank)
    if a["post_activation"] == "linear":
        ctx.node("Add", [y, ctx.input_name(residual)], ctx.output_name(0))
    else:
        y = ctx.node("Add", [y, ctx.input_name(residual)])
        onnx_activation(ctx, a["post_activation"], y, a["post_activation_attrs"], ctx.output_name(0))


def _fused_conv_to_onnx(ctx, op):
    from graphc.ops.conv import onnx_conv

    _conv_epilogue(ctx, op, lambda b: onnx_conv(ctx, ctx.input_name(0), 1, ctx.attrs, bias=b, nchw_out=True), 2)


def _fused_separable_to_onnx(ctx, op):
    from graphc.ops.conv import onnx_conv

    rank = ctx.input_type(0).rank
    cm, o = ctx.input_type(2).shape

    def main(b):
        d = onnx_conv(ctx, ctx.input_name(0), 1, ctx.attrs, nchw_out=True)
        pw = ctx.derived(2, lambda p: np.ascontiguousarray(p.T).reshape((o, cm) + (1,) * (rank - 2)), "oihw")
        if pw is None:
            pw = ctx.unsqueeze(ctx.transpose(ctx.input_name(2), [1, 0]), list(range(2, rank)))
        return ctx.node("Conv", [d, pw] + ([b] if b else []), kernel_shape=[1] * (rank - 2))

    _conv_epilogue(ctx, op, main, 3)


def _scale_shift_to_onnx(ctx, op):
    rank = ctx.input_type(0).rank
    ax = ctx.attrs["axis"] % rank
    trailing = rank - 1 - ax

    def along(i: int) -> str:
        if not trailing:
            return ctx.input_name(i)
        return ctx.derived(i, lambda v: v.reshape((-1,) + (1,) * trailing), f"axis{ax}") \
            or ctx.unsqueeze(ctx.input_name(i), list(range(1, trailing + 1)))

    scaled = ctx.node("Mul", [ctx.input_name(0), along(1)])
    ctx.node("Add", [scaled, along(2)], ctx.output_name(0))


get("fused_matmul").to_onnx = _fused_matmul_to_onnx
get("fused_conv").to_onnx = _fused_conv_to_onnx
get("fused_separable_conv").to_onnx = _fused_separable_to_onnx
get("scale_shift").to_onnx = _scale_shift_to_onnx


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext). Training graphs are
# differentiated before fusion, but a fused graph can be differentiated too: the main product
# is recomputed with the unfused ops, the epilogue is walked back (post-activation, residual,
# activation, bias) with ``unary_grad``, and the product's gradient uses the unfused ops' own.

def _epilogue_vjp(ctx, z: str, dy: str, num_main: int):
    """(d of the main product, d bias or None, d residual or None) for main result ``z``."""
    a = ctx.attrs
    bias, residual = epilogue_inputs(num_main, a, len(ctx.x), ctx.op.type)
    z1 = ctx.bias_add(z, ctx.x[bias]) if bias is not None else z
    d_res = None
    da1 = dy
    if residual is not None:
        a1 = z1 if a["activation"] == "linear" else ctx.emit(a["activation"], z1, **dict(a["activation_attrs"]))
        if a["post_activation"] != "linear":
            r = ctx.add(a1, ctx.x[residual])
            da1 = ctx.unary_grad(r, dy, activation=a["post_activation"], activation_attrs=a["post_activation_attrs"])
        d_res = da1
    dz = da1 if a["activation"] == "linear" else ctx.unary_grad(z1, da1, activation=a["activation"],
                                                                 activation_attrs=a["activation_attrs"])
    rank = ctx.rank(dz)
    d_bias = ctx.reduce_sum(dz, axes=tuple(range(rank - 1))) if bias is not None else None
    return dz, d_bias, d_res


def _with_epilogue(main_grads: list, d_bias, d_res, attrs) -> list:
    out = list(main_grads)
    if attrs["has_bias"]:
        out.append(d_bias)
    if attrs["has_residual"]:
        out.append(d_res)
    return out


def _matmul_grads(ctx, x: str, w: str, dz: str, need_x: bool, need_w: bool):
    k, n = ctx.shape(w)
    dx = ctx.matmul(dz, ctx.transpose(w, perm=(1, 0))) if need_x else None
    dw = None
    if need_w:
        x2 = ctx.reshape(x, shape=(-1, k)) if ctx.rank(x) != 2 else x
        d2 = ctx.reshape(dz, shape=(-1, n)) if ctx.rank(dz) != 2 else dz
        dw = ctx.matmul(ctx.transpose(x2, perm=(1, 0)), d2)
    return dx, dw


def _fused_matmul_vjp(ctx, dy):
    x, w = ctx.x[:2]
    dz, d_bias, d_res = _epilogue_vjp(ctx, ctx.matmul(x, w), dy, 2)
    dx, dw = _matmul_grads(ctx, x, w, dz, ctx.needs[0], ctx.needs[1])
    return _with_epilogue([dx, dw], d_bias, d_res, ctx.attrs)


def _fused_conv_vjp(ctx, dy):
    x, w = ctx.x[:2]
    conv_attrs = _conv_attrs(ctx.attrs)
    dz, d_bias, d_res = _epilogue_vjp(ctx, ctx.conv(x, w, **conv_attrs), dy, 2)
    dx = ctx.conv_grad_input(dz, w, x, **conv_attrs) if ctx.needs[0] else None
    dw = ctx.conv_grad_kernel(x, dz, w, **conv_attrs) if ctx.needs[1] else None
    return _with_epilogue([dx, dw], d_bias, d_res, ctx.attrs)


def _fused_separable_vjp(ctx, dy):
    x, dw_k, pw = ctx.x[:3]
    conv_attrs = _conv_attrs(ctx.attrs)
    d = ctx.conv(x, dw_k, **conv_attrs)
    dz, d_bias, d_res = _epilogue_vjp(ctx, ctx.matmul(d, pw), dy, 3)
    dd, dpw = _matmul_grads(ctx, d, pw, dz, ctx.needs[0] or ctx.needs[1], ctx.needs[2])
    dx = ctx.conv_grad_input(dd, dw_k, x, **conv_attrs) if ctx.needs[0] else None
    ddw = ctx.conv_grad_kernel(x, dd, dw_k, **conv_attrs) if ctx.needs[1] else None
    return _with_epilogue([dx, ddw, dpw], d_bias, d_res, ctx.attrs)


def _scale_shift_vjp(ctx, dy):
    x, scale, shift = ctx.x
    rank = ctx.rank(x)
    ax = ctx.attrs["axis"] % rank
    others = tuple(i for i in range(rank) if i != ax)
    trailing = rank - 1 - ax
    along = scale if not trailing else ctx.reshape(scale, shape=(ctx.shape(scale)[0],) + (1,) * trailing)
    return [ctx.mul(dy, along) if ctx.needs[0] else None,
            ctx.reduce_sum(ctx.mul(dy, x), axes=others) if ctx.needs[1] else None,
            ctx.reduce_sum(dy, axes=others) if ctx.needs[2] else None]


get("fused_matmul").vjp = _fused_matmul_vjp
get("fused_conv").vjp = _fused_conv_vjp
get("fused_separable_conv").vjp = _fused_separable_vjp
get("scale_shift").vjp = _scale_shift_vjp


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, dy)`` facets (ctx: the autodiff GradContext). A fused op is differentiated as
# what it stands for: its unfused ops are emitted again (a recomputation: these ops only
# exist in optimized graphs, which are rarely differentiated) and their own vjps are
# chained backwards through them.
def _unfused(ctx) -> str:
    """Emit the unfused ops of the fused op ``ctx.op``; returns the final value."""
    op, attrs = ctx.op.type, ctx.attrs
    x = ctx.x
    if op == "scale_shift":
        shape = [1] * ctx.rank(x[0])
        shape[attrs["axis"] % len(shape)] = -1
        scale = ctx.reshape(x[1], shape=tuple(shape))
        return ctx.add(ctx.mul(x[0], scale), ctx.reshape(x[2], shape=tuple(shape)))
    n = FUSED_OPS[op]
    bias, residual = epilogue_inputs(n, attrs, len(x), op)
    if op == "fused_matmul":
        y = ctx.matmul(x[0], x[1])
    else:
        y = ctx.conv(x[0], x[1], **_conv_attrs(attrs))
        if op == "fused_separable_conv":
            y = ctx.matmul(y, x[2])
    if bias is not None:
        y = ctx.bias_add(y, x[bias])
    if attrs["activation"] != "linear":
        y = ctx.emit(attrs["activation"], y, **dict(attrs["activation_attrs"]))
    if residual is not None:
        y = ctx.add(y, x[residual])
        if attrs["post_activation"] != "linear":
            y = ctx.emit(attrs["post_activation"], y, **dict(attrs["post_activation_attrs"]))
    return y


def _decomposed_vjp(ctx, dy):
    graph = ctx.graph
    final = _unfused(ctx)
    inputs = set(ctx.x)
    ops, seen = [], set()

    def visit(value: str) -> None:  # the emitted ops, producers first
        producer = graph.producer(value)
        if value in inputs or producer is None or producer.id in seen:
            return
        seen.add(producer.id)
        for v in producer.inputs:
            visit(v)
        ops.append(producer)

    visit(final)
    wanted = {v for v, need in zip(ctx.x, ctx.needs) if need}
    cot: dict[str, list[str]] = {final: [dy]}
    for sub in reversed(ops):
        parts = cot.get(sub.outputs[0])
        if not parts:
            continue
        g = parts[0] if len(parts) == 1 else ctx.add_n(*parts)
        needs = [v in wanted or v not in inputs for v in sub.inputs]
        opdef = get(sub.type)
        sub_ctx = type(ctx)(graph, sub, opdef.resolve_attrs(sub.attrs), needs, getattr(ctx, "_scalars", {}))
        for v, gv, need in zip(sub.inputs, opdef.vjp(sub_ctx, g), needs):
            if need and gv is not None:
                cot.setdefault(v, []).append(sub_ctx.match(gv, v))
    out: list[str | None] = []
    done: set[str] = set()
    for v, need in zip(ctx.x, ctx.needs):
        parts = cot.get(v) if need and v not in done else None
        done.add(v)
        out.append(None if not parts else parts[0] if len(parts) == 1 else ctx.add_n(*parts))
    return out


for _name in (*FUSED_OPS, "scale_shift"):
    get(_name).vjp = _decomposed_vjp


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm):
# the epilogue runs on the GEMM tile (or the direct kernel's vector) while it is in registers.

def _native_epilogue(inputs, num_main: int, attrs: Mapping[str, Any], op: str) -> dict[str, Any]:
    from graphc.ops.elementwise import native_activation

    bias, residual = epilogue_inputs(num_main, attrs, len(inputs), op)

    def act(name, pairs):
        if name == "linear":
            return None
        return lambda m, v: native_activation(m, name, v, pairs)

    post = act(attrs["post_activation"], attrs["post_activation_attrs"]) if residual is not None else None
    return {"bias": inputs[bias] if bias is not None else None,
            "activation": act(attrs["activation"], attrs["activation_attrs"]),
            "residual": inputs[residual] if residual is not None else None,
            "post_activation": post}


def _fused_matmul_lower(kb, op, *inputs, out, **attrs):
    kb.matmul(inputs[0], inputs[1], out, **_native_epilogue(inputs, 2, attrs, op.type))


def _fused_conv_lower(kb, op, *inputs, out, **attrs):
    from graphc.ops.conv import spatial_attrs

    x = inputs[0]
    s, d, p = spatial_attrs(x.rank - 2, attrs["strides"], attrs["dilations"], attrs["pads"], op.type)
    kb.conv(x, inputs[1], out, strides=s, dilations=d, pads=p, groups=attrs["groups"],
            **_native_epilogue(inputs, 2, attrs, op.type))


def _fused_separable_lower(kb, op, *inputs, out, **attrs):
    from graphc.ops.conv import spatial_attrs

    x = inputs[0]
    s, d, p = spatial_attrs(x.rank - 2, attrs["strides"], attrs["dilations"], attrs["pads"], op.type)
    kb.separable_conv(x, inputs[1], inputs[2], out, strides=s, dilations=d, pads=p, groups=attrs["groups"],
                      **_native_epilogue(inputs, 3, attrs, op.type))


def _scale_shift_lower(kb, op, x, scale, shift, *, out, axis):
    from graphc.ops.linalg import along_axis

    kb.map(out, [x, along_axis(kb, scale, axis, x.rank), along_axis(kb, shift, axis, x.rank)],
           lambda m, v, a, b: m.fma(v, a, b), name="scale_shift")


get("fused_matmul").lower = _fused_matmul_lower
get("fused_conv").lower = _fused_conv_lower
get("fused_separable_conv").lower = _fused_separable_lower
get("scale_shift").lower = _scale_shift_lower
