"""Elementwise ops: activations and unary math, and broadcasting binary arithmetic.

The activation table (``UNARY``) is the single definition of every activation's NumPy
formula; fused ops and backends look activations up here by name. Formulas follow
Keras 3 (hard_sigmoid is relu6(x + 3) / 6, hard_silu is x * relu6(x + 3) / 6, mish is
x * tanh(softplus(x)); gelu is exact unless ``approximate``; relu keeps x only where
x > threshold, as Keras's ReLU does).
"""

from __future__ import annotations

import math

import numpy as np

from graphc.ir.types import TensorType
from graphc.ops.common import broadcast_shapes, require_float, same_dtype
from graphc.ops.registry import OpDef, ShapeError, get, register

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


def _softplus(x):
    return (np.logaddexp(0, x)).astype(x.dtype, copy=False)


def _elu(x, alpha=1.0):
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _selu(x):
    return (SELU_SCALE * _elu(x, SELU_ALPHA)).astype(x.dtype, copy=False)


def _gelu(x, approximate=False):
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        y = 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x ** 3)))
    else:
        erf = np.vectorize(math.erf, otypes=[np.float64])
        y = 0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))
    return y.astype(x.dtype, copy=False)


def _relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope == 0.0 and threshold == 0.0:  # NaN stays NaN, as in Keras (max(x, 0), then the ceiling)
        y = np.maximum(x, 0)
        return (y if max_value is None else np.minimum(y, max_value)).astype(x.dtype, copy=False)
    y = np.where(x > threshold, x, negative_slope * (x - threshold))  # NaN stays NaN, as in Keras
    if max_value is not None:
        y = np.minimum(y, max_value)
    return y.astype(x.dtype, copy=False)


def _hard_silu(x):
    return (x * np.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False)


def _mish(x):
    return (x * np.tanh(_softplus(x))).astype(x.dtype, copy=False)


# name -> (numpy formula, attribute defaults)
UNARY: dict[str, tuple] = {
    "relu": (_relu, {"negative_slope": 0.0, "max_value": None, "threshold": 0.0}),
    "sigmoid": (_sigmoid, {}),
    "tanh": (np.tanh, {}),
    "exp": (np.exp, {}),
    "log": (np.log, {}),
    "neg": (np.negative, {}),
    "abs": (np.abs, {}),
    "sqrt": (np.sqrt, {}),
    "square": (np.square, {}),
    "reciprocal": (np.reciprocal, {}),
    "softplus": (_softplus, {}),
    "softsign": (lambda x: x / (1 + np.abs(x)), {}),
    "selu": (_selu, {}),
    "elu": (_elu, {"alpha": 1.0}),
    "gelu": (_gelu, {"approximate": False}),
    "hard_sigmoid": (lambda x: (np.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False), {}),
    "silu": (lambda x: x * _sigmoid(x), {}),
    "hard_silu": (_hard_silu, {}),
    "mish": (_mish, {}),
}


def apply_activation(name: str, x: np.ndarray, **attrs) -> np.ndarray:
    """Apply activation ``name`` ("linear" is the identity) as its reference defines it."""
    if name in (None, "linear"):
        return x
    fn, defaults = UNARY[name]
    return fn(x, **{**defaults, **attrs})


def _unary_infer(types, **_):
    require_float(types[0])
    return types[0]


def _register_unary(name: str, fn, defaults: dict) -> None:
    def reference(x, **attrs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(fn(x, **attrs), dtype=x.dtype)

    register(OpDef(name, _unary_infer, reference, attrs=dict(defaults), num_inputs=1,
                   fusion_kind="elementwise", doc=f"Elementwise {name}."))


for _name, (_fn, _defaults) in UNARY.items():
    _register_unary(_name, _fn, _defaults)


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
}


def _binary_infer(types, **_):
    dtype = same_dtype(types)
    return TensorType(dtype, broadcast_shapes(types[0].shape, types[1].shape))


def _register_binary(name: str, fn) -> None:
    def reference(a, b):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(fn(a, b), dtype=np.result_type(a, b))

    register(OpDef(name, _binary_infer, reference, num_inputs=2, fusion_kind="broadcast",
                   doc=f"Elementwise {name} with NumPy broadcasting."))


for _name, _fn in BINARY.items():
    _register_binary(_name, _fn)


def _sum_infer(types, **_):
    dtype = same_dtype(types)
    return TensorType(dtype, broadcast_shapes(*[t.shape for t in types]))


def _add_n(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


register(OpDef("add_n", _sum_infer, _add_n, fusion_kind="broadcast",
               doc="Sum of any number of tensors (with broadcasting)."))


def _cast_infer(types, *, dtype):
    from graphc.ir.types import normalize_dtype

    return types[0].with_dtype(normalize_dtype(dtype))


register(OpDef("cast", _cast_infer, lambda x, *, dtype: x.astype(dtype), attrs={"dtype": "float32"},
               num_inputs=1, fusion_kind="elementwise", not_differentiable=False,
               doc="Convert to another dtype."))


def _identity_infer(types, **_):
    return types[0]


register(OpDef("identity", _identity_infer, lambda x: x, num_inputs=1, fusion_kind="elementwise",
               doc="The input, unchanged."))


def _dropout_infer(types, *, rate, seed):
    require_float(types[0])
    if not 0.0 <= rate < 1.0:
        raise ShapeError(f"dropout rate must be in [0, 1), got {rate}")
    return types[0]


register(OpDef("dropout", _dropout_infer, lambda x, *, rate, seed: x, attrs={"rate": 0.5, "seed": None},
               num_inputs=1, fusion_kind="elementwise",
               doc="Inference-time dropout: the identity (training graphs use a random mask)."))


def _clip_infer(types, **_):
    return types[0]


register(OpDef("clip", _clip_infer,
               lambda x, *, min, max: np.clip(x, min, max).astype(x.dtype, copy=False),
               attrs={"min": None, "max": None}, num_inputs=1, fusion_kind="elementwise",
               doc="Clamp to [min, max]."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets. ``ctx`` is the ONNX backend's emitter facade
# (graphc.backends.onnx.context.EmitContext): op inputs/outputs, attributes, ``ctx.node``...

_ONNX_UNARY = {"sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log", "neg": "Neg", "abs": "Abs",
               "sqrt": "Sqrt", "reciprocal": "Reciprocal", "softplus": "Softplus", "softsign": "Softsign"}
_ONNX_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "maximum": "Max", "minimum": "Min",
                "pow": "Pow"}


def onnx_activation(ctx, name: str, x: str, attrs=None, out=None) -> str:
    """Emit activation ``name`` (a ``UNARY`` entry or "linear") on ONNX value ``x``.

    ``attrs`` override the activation's defaults; ``out`` names the result (default: a new value).
    Shared by the activation ops and the fused ops' epilogues.
    """
    if name in (None, "linear"):
        return x if out is None else ctx.node("Identity", [x], out)
    a = {**UNARY[name][1], **dict(attrs or {})}
    dtype = ctx.input_type(0).dtype
    if name in _ONNX_UNARY:
        return ctx.node(_ONNX_UNARY[name], [x], out)
    if name == "relu":
        slope, top, thr = a["negative_slope"], a["max_value"], a["threshold"]
        if slope == 0.0 and thr == 0.0:
            if top is None:
                return ctx.node("Relu", [x], out)
            return ctx.node("Clip", [x, ctx.scalar(0, dtype), ctx.scalar(top, dtype)], out)
        if thr == 0.0 and top is None:
            return ctx.node("LeakyRelu", [x], out, alpha=float(slope))
        t = ctx.scalar(thr, dtype)
        above = ctx.node("Greater", [x, t])
        leak = ctx.node("Mul", [ctx.node("Sub", [x, t]), ctx.scalar(slope, dtype)])
        if top is None:
            return ctx.node("Where", [above, x, leak], out)
        return ctx.node("Min", [ctx.node("Where", [above, x, leak]), ctx.scalar(top, dtype)], out)
    if name == "square":
        return ctx.node("Mul", [x, x], out)
    if name == "selu":
        return ctx.node("Selu", [x], out, alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if name == "elu":
        return ctx.node("Elu", [x], out, alpha=float(a["alpha"]))
    if name == "hard_sigmoid":
        return ctx.node("HardSigmoid", [x], out, alpha=1.0 / 6.0, beta=0.5)
    if name == "silu":
        return ctx.node("Mul", [x, ctx.node("Sigmoid", [x])], out)
    if name == "hard_silu":
        if ctx.opset >= 14:
            return ctx.node("HardSwish", [x], out)
        return ctx.node("Mul", [x, ctx.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)], out)
    if name == "mish":
        return ctx.node("Mul", [x, ctx.node("Tanh", [ctx.node("Softplus", [x])])], out)
    if name == "gelu":
        approximate = bool(a["approximate"])
        if ctx.opset >= 20:
            return ctx.node("Gelu", [x], out, approximate="tanh" if approximate else "none")
        half = ctx.node("Mul", [x, ctx.scalar(0.5, dtype)])
        if approximate:
            cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
            inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.scalar(0.044715, dtype)])])
            t = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.scalar(math.sqrt(2.0 / math.pi), dtype)])])
        else:
            t = ctx.node("Erf", [ctx.node("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0), dtype)])])
        return ctx.node("Mul", [half, ctx.node("Add", [t, ctx.scalar(1.0, dtype)])], out)
    raise ctx.error(f"activation {name!r} has no ONNX mapping")


def _unary_to_onnx(name: str):
    def to_onnx(ctx, op):
        onnx_activation(ctx, name, ctx.input_name(0), ctx.attrs, ctx.output_name(0))

    return to_onnx


def _node_to_onnx(onnx_type: str):
    def to_onnx(ctx, op):
        ctx.node(onnx_type, list(op.inputs), ctx.output_name(0))

    return to_onnx


def _cast_to_onnx(ctx, op):
    ctx.cast(ctx.input_name(0), ctx.output_type(0).dtype, ctx.output_name(0))


def _clip_to_onnx(ctx, op):
    lo, hi = ctx.attrs["min"], ctx.attrs["max"]
    dtype = ctx.input_type(0).dtype
    if lo is None and hi is None:
        ctx.node("Identity", [ctx.input_name(0)], ctx.output_name(0))
        return
    if dtype not in ("float32", "float64", "float16"):
        ctx.require_opset(12, "Clip on integers")
    bounds = ["" if v is None else ctx.scalar(v, dtype) for v in (lo, hi)]
    ctx.node("Clip", [ctx.input_name(0), *bounds], ctx.output_name(0))


for _name in UNARY:
    get(_name).to_onnx = _unary_to_onnx(_name)
for _name, _onnx_type in _ONNX_BINARY.items():
    get(_name).to_onnx = _node_to_onnx(_onnx_type)
get("add_n").to_onnx = _node_to_onnx("Sum")
get("identity").to_onnx = _node_to_onnx("Identity")
get("dropout").to_onnx = _node_to_onnx("Identity")  # inference graphs only
get("cast").to_onnx = _cast_to_onnx
get("clip").to_onnx = _clip_to_onnx


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm).
# Each activation is written once over a VMath ``m`` (vector or scalar values alike);
# fused ops and recurrent cells apply the same formulas through ``native_activation``.

def _native_relu(m, x, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope == 0.0 and threshold == 0.0:
        y = m.maximum(x, 0.0)
        return y if max_value is None else m.minimum(y, max_value)
    y = m.select(m.cmp(">", x, threshold), x, m.mul(m.sub(x, threshold), negative_slope))
    return y if max_value is None else m.minimum(y, max_value)


def _native_gelu(m, x, approximate=False):
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        inner = m.mul(m.add(x, m.mul(m.mul(m.mul(x, x), x), 0.044715)), c)
        return m.mul(m.mul(x, 0.5), m.add(m.tanh(inner), 1.0))
    return m.mul(m.mul(x, 0.5), m.add(m.erf(m.mul(x, 1.0 / math.sqrt(2.0))), 1.0))


def _native_elu(m, x, alpha=1.0):
    return m.select(m.cmp(">", x, 0.0), x, m.mul(m.expm1(m.minimum(x, 0.0)), alpha))


def _native_softplus(m, x):
    return m.add(m.maximum(x, 0.0), m.log1p(m.exp(m.neg(m.abs(x)))))


NATIVE_UNARY = {
    "relu": _native_relu,
    "sigmoid": lambda m, x: m.sigmoid(x),
    "tanh": lambda m, x: m.tanh(x),
    "exp": lambda m, x: m.exp(x),
    "log": lambda m, x: m.log(x),
    "neg": lambda m, x: m.neg(x),
    "abs": lambda m, x: m.abs(x),
    "sqrt": lambda m, x: m.sqrt(x),
    "square": lambda m, x: m.mul(x, x),
    "reciprocal": lambda m, x: m.div(m.const(1.0, x), x),
    "softplus": _native_softplus,
    "softsign": lambda m, x: m.div(x, m.add(m.abs(x), 1.0)),
    "selu": lambda m, x: m.mul(_native_elu(m, x, SELU_ALPHA), SELU_SCALE),
    "elu": _native_elu,
    "gelu": _native_gelu,
    "hard_sigmoid": lambda m, x: m.mul(m.clip(m.add(x, 3.0), 0.0, 6.0), 1.0 / 6.0),
    "silu": lambda m, x: m.silu(x),
    "hard_silu": lambda m, x: m.mul(m.mul(x, m.clip(m.add(x, 3.0), 0.0, 6.0)), 1.0 / 6.0),
    "mish": lambda m, x: m.mul(x, m.tanh(_native_softplus(m, x))),
}


def native_activation(m, name: str, x, attrs=()):
    """Activation ``name`` ("linear" is the identity) on VMath value ``x``; ``attrs`` a dict or pairs."""
    if name in (None, "linear"):
        return x
    return NATIVE_UNARY[name](m, x, **dict(attrs or {}))


def _unary_lower(name: str):
    def lower(kb, op, x, *, out, **attrs):
        kb.map(out, [x], lambda m, v: NATIVE_UNARY[name](m, v, **attrs), name=name)

    return lower


_NATIVE_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "maximum": "maximum",
                  "minimum": "minimum", "pow": "pow"}


def _binary_lower(method: str):
    def lower(kb, op, a, b, *, out):
        kb.map(out, [a, b], lambda m, x, y: getattr(m, method)(x, y), name=method)

    return lower


def _add_n_lower(kb, op, *xs, out):
    def total(m, *vals):
        acc = vals[0]
        for v in vals[1:]:
            acc = m.add(acc, v)
        return acc

    kb.map(out, list(xs), total, name="add_n")


def _cast_lower(kb, op, x, *, out, dtype):
    if x.dtype == out.dtype:
        kb.alias(out, x)
        return
    kb.map(out, [x], lambda m, v: m.cast(v, out.dtype, x.dtype), name="cast")


def _alias_lower(kb, op, x, *, out, **_):
    kb.alias(out, x)


def _clip_lower(kb, op, x, *, out, min, max):
    kb.map(out, [x], lambda m, v: m.clip(v, min, max), name="clip")


for _name in UNARY:
    get(_name).lower = _unary_lower(_name)
for _name, _method in _NATIVE_BINARY.items():
    get(_name).lower = _binary_lower(_method)
get("add_n").lower = _add_n_lower
get("cast").lower = _cast_lower
get("identity").lower = _alias_lower
get("dropout").lower = _alias_lower
get("clip").lower = _clip_lower


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents) -> [input cotangent or None, ...]`` facets (ctx: the autodiff
# GradContext), and the ops that training graphs need besides: ``unary_grad`` (an activation's
# derivative times the cotangent, one op for every activation), ``where``, comparisons,
# ``broadcast_like``, ``num_elements``, ``one_hot`` and ``random_uniform_like`` (dropout masks).

def _d_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    d = np.where(x > threshold, 1.0, negative_slope)
    if max_value is not None:
        y = np.where(x > threshold, x, negative_slope * (x - threshold))
        d = d * (y < max_value)
    return d


def _d_gelu(x, approximate=False):
    x64 = x.astype(np.float64)
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x64 + 0.044715 * x64 ** 3))
        return 0.5 * (1.0 + t) + 0.5 * x64 * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x64 ** 2)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * (1.0 + erf(x64 / math.sqrt(2.0))) + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)


def _d_sigmoid(x):
    s = _sigmoid(x)
    return s * (1 - s)


def _d_elu(x, alpha=1.0):
    with np.errstate(over="ignore"):
        return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))


def _d_hard_silu(x):
    return np.where(x < -3.0, 0.0, np.where(x > 3.0, 1.0, x / 3.0 + 0.5))


def _d_mish(x):
    t = np.tanh(_softplus(x))
    return t + x * (1 - t * t) * _sigmoid(x)


# name -> derivative f'(x) of the UNARY entry of the same name, from its input
UNARY_DERIV: dict = {
    "relu": _d_relu,
    "sigmoid": _d_sigmoid,
    "tanh": lambda x: 1 - np.tanh(x) ** 2,
    "exp": np.exp,
    "log": lambda x: 1 / x,
    "neg": lambda x: np.full_like(x, -1),
    "abs": np.sign,
    "sqrt": lambda x: 0.5 / np.sqrt(x),
    "square": lambda x: 2 * x,
    "reciprocal": lambda x: -1 / (x * x),
    "softplus": _sigmoid,
    "softsign": lambda x: 1 / (1 + np.abs(x)) ** 2,
    "selu": lambda x: SELU_SCALE * _d_elu(x, SELU_ALPHA),
    "elu": _d_elu,
    "gelu": _d_gelu,
    "hard_sigmoid": lambda x: ((x > -3.0) & (x < 3.0)) / 6.0,
    "silu": lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
    "hard_silu": _d_hard_silu,
    "mish": _d_mish,
}


def activation_derivative(name: str, x: np.ndarray, **attrs) -> np.ndarray:
    """f'(x) for activation ``name`` ("linear": ones), in ``x``'s dtype."""
    if name in (None, "linear"):
        return np.ones_like(x)
    fn = UNARY_DERIV[name]
    defaults = UNARY[name][1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(fn(x, **{**defaults, **attrs}), dtype=x.dtype)


def _unary_grad_infer(types, *, activation, activation_attrs):
    x, dy = types
    require_float(x, "unary_grad input")
    same_dtype(types, "unary_grad operands")
    if activation != "linear" and activation not in UNARY_DERIV:
        raise ShapeError(f"unary_grad: unknown activation {activation!r}")
    if x.shape != dy.shape and broadcast_shapes(x.shape, dy.shape) != x.shape:
        raise ShapeError(f"unary_grad: cotangent {dy} does not match input {x}")
    return x


# Activations whose gradient is selected, not multiplied, where their derivative is 0 (as torch's
# threshold_backward does for relu): an infinite or NaN cotangent there gives 0, not NaN.
SELECTED_GRADIENT = frozenset({"relu"})


def _unary_grad(x, dy, *, activation, activation_attrs):
    d = activation_derivative(activation, x, **dict(activation_attrs))
    with np.errstate(invalid="ignore"):
        g = dy * d
    if activation in SELECTED_GRADIENT:
        g = np.where(d == 0, np.zeros((), dtype=g.dtype), g)
    return g.astype(x.dtype, copy=False)


register(OpDef("unary_grad", _unary_grad_infer, _unary_grad, attrs={"activation": "linear", "activation_attrs": ()},
               num_inputs=2, fusion_kind="elementwise", not_differentiable=True,
               doc="dy * f'(x) for activation f (a UNARY name, with its attribute pairs): (x, dy) -> dx."))


def _where_infer(types, **_):
    cond, a, b = types
    if cond.dtype != "bool":
        raise ShapeError(f"where condition must be bool, got {cond.dtype}")
    dtype = same_dtype([a, b], "where branches")
    return TensorType(dtype, broadcast_shapes(cond.shape, a.shape, b.shape))


register(OpDef("where", _where_infer, lambda c, a, b: np.where(c, a, b), num_inputs=3, fusion_kind="broadcast",
               doc="a where cond else b, with broadcasting (cond is bool)."))


def _compare_infer(types, **_):
    same_dtype(types, "compared tensors")
    return TensorType("bool", broadcast_shapes(types[0].shape, types[1].shape))


for _name, _fn in {"greater": np.greater, "greater_equal": np.greater_equal, "less": np.less,
                   "equal": np.equal}.items():
    register(OpDef(_name, _compare_infer, _fn, num_inputs=2, fusion_kind="broadcast", not_differentiable=True,
                   doc=f"Elementwise {_name} comparison with broadcasting; a bool tensor."))


def _broadcast_like_infer(types, **_):
    a, like = types
    if a.rank > like.rank:
        raise ShapeError(f"broadcast_like: cannot broadcast {a} to the lower-rank {like}")
    out = broadcast_shapes(a.shape, like.shape)
    if any(isinstance(o, int) and isinstance(w, int) and o != w for o, w in zip(out, like.shape)):
        raise ShapeError(f"broadcast_like: {a} does not broadcast to the shape of {like}")
    return TensorType(a.dtype, like.shape)


register(OpDef("broadcast_like", _broadcast_like_infer, lambda a, like: np.broadcast_to(a, like.shape).copy(),
               num_inputs=2, fusion_kind="broadcast",
               doc="a broadcast to the shape of `like` (whose values are not read)."))


def _num_elements_infer(types, *, axes, dtype):
    from graphc.ir.types import normalize_dtype
    from graphc.ops.common import norm_axis

    x = types[0]
    if axes is not None:
        for a in axes:
            norm_axis(a, x.rank)
    return TensorType(normalize_dtype(dtype), ())


def _num_elements(x, *, axes, dtype):
    dims = x.shape if axes is None else [x.shape[a] for a in axes]
    return np.asarray(np.prod(dims, dtype=np.int64), dtype=dtype)


register(OpDef("num_elements", _num_elements_infer, _num_elements, attrs={"axes": None, "dtype": "float32"},
               num_inputs=1, fusion_kind="opaque", not_differentiable=True,
               doc="The number of elements of x along `axes` (None: all) as a scalar of `dtype`; "
                   "x's values are not read."))


def _one_hot_infer(types, *, depth, dtype):
    from graphc.ir.types import is_int, normalize_dtype

    ids = types[0]
    if not is_int(ids.dtype):
        raise ShapeError(f"one_hot indices must be integers, got {ids.dtype}")
    if not isinstance(depth, int) or depth < 1:
        raise ShapeError(f"one_hot depth must be a positive integer, got {depth!r}")
    return TensorType(normalize_dtype(dtype), ids.shape + (depth,))


def _one_hot(ids, *, depth, dtype):
    if ids.size and (ids.min() < 0 or ids.max() >= depth):
        bad = ids[(ids < 0) | (ids >= depth)].flat[0]
        raise IndexError(f"class index {int(bad)} is out of range for {depth} classes")
    return (ids[..., None] == np.arange(depth)).astype(dtype)


register(OpDef("one_hot", _one_hot_infer, _one_hot, attrs={"depth": None, "dtype": "float32"},
               num_inputs=1, fusion_kind="injective", not_differentiable=True,
               doc="ids (...) -> (..., depth): 1 at each id, 0 elsewhere; ids out of range are an error."))

_RANDOM_STREAMS: dict[int, np.random.Generator] = {}


def _random_uniform_like(x, *, seed):
    """Uniform [0, 1) of x's shape: NumPy's global generator, or one stream per given seed."""
    if seed is None:
        u = np.random.random_sample(x.shape)
    else:
        u = _RANDOM_STREAMS.setdefault(int(seed), np.random.default_rng(int(seed))).random(x.shape)
    return u.astype(x.dtype)


register(OpDef("random_uniform_like", _unary_infer, _random_uniform_like, attrs={"seed": None}, num_inputs=1,
               fusion_kind="opaque", not_differentiable=True,
               doc="Uniform [0, 1) values of x's shape and dtype (x's values are not read); a given seed "
                   "starts a reproducible stream."))


def _random_normal_like(x, *, seed):
    """Standard normal values of x's shape: NumPy's global generator, or the seed's stream."""
    if seed is None:
        z = np.random.standard_normal(x.shape)
    else:
        z = _RANDOM_STREAMS.setdefault(int(seed), np.random.default_rng(int(seed))).standard_normal(x.shape)
    return np.asarray(z).astype(x.dtype)


register(OpDef("random_normal_like", _unary_infer, _random_normal_like, attrs={"seed": None}, num_inputs=1,
               fusion_kind="opaque", not_differentiable=True,
               doc="Standard normal values of x's shape and dtype (x's values are not read); a given seed "
                   "starts a reproducible stream (Gaussian noise layers)."))


def _unary_vjp(name: str):
    def vjp(ctx, dy):
        pairs = tuple(sorted(ctx.attrs.items()))
        return [ctx.unary_grad(ctx.x[0], dy, activation=name, activation_attrs=pairs)]

    return vjp


def _add_vjp(ctx, dy):
    a, b = ctx.x
    return [ctx.unbroadcast(dy, a), ctx.unbroadcast(dy, b)]


def _sub_vjp(ctx, dy):
    a, b = ctx.x
    return [ctx.unbroadcast(dy, a), ctx.unbroadcast(ctx.neg(dy), b) if ctx.needs[1] else None]


def _mul_vjp(ctx, dy):
    a, b = ctx.x
    return [ctx.unbroadcast(ctx.mul(dy, b), a) if ctx.needs[0] else None,
            ctx.unbroadcast(ctx.mul(dy, a), b) if ctx.needs[1] else None]


def _div_vjp(ctx, dy):
    a, b = ctx.x
    q = ctx.div(dy, b)
    return [ctx.unbroadcast(q, a) if ctx.needs[0] else None,
            ctx.unbroadcast(ctx.neg(ctx.mul(q, ctx.y[0])), b) if ctx.needs[1] else None]


def _select_vjp(smaller_wins: bool):
    def vjp(ctx, dy):
        a, b = ctx.x
        mask = ctx.greater_equal(b, a) if smaller_wins else ctx.greater_equal(a, b)  # where a is picked
        zero = ctx.scalar(0.0, ctx.dtype(dy))
        return [ctx.unbroadcast(ctx.where(mask, dy, zero), a) if ctx.needs[0] else None,
                ctx.unbroadcast(ctx.where(mask, zero, dy), b) if ctx.needs[1] else None]

    return vjp


def _pow_vjp(ctx, dy):
    a, b = ctx.x
    one = ctx.scalar(1.0, ctx.dtype(dy))
    da = db = None
    if ctx.needs[0]:
        da = ctx.unbroadcast(ctx.mul(dy, ctx.mul(b, ctx.pow(a, ctx.sub(b, one)))), a)
    if ctx.needs[1]:
        zero = ctx.scalar(0.0, ctx.dtype(dy))
        log_a = ctx.where(ctx.greater(a, zero), ctx.log(ctx.where(ctx.greater(a, zero), a, one)), zero)
        db = ctx.unbroadcast(ctx.mul(dy, ctx.mul(ctx.y[0], log_a)), b)
    return [da, db]


def _add_n_vjp(ctx, dy):
    return [ctx.unbroadcast(dy, x) if need else None for x, need in zip(ctx.x, ctx.needs)]


def _cast_vjp(ctx, dy):
    from graphc.ir.types import is_float

    src = ctx.dtype(ctx.x[0])
    if not is_float(src):
        return [None]
    return [dy if src == ctx.dtype(dy) else ctx.cast(dy, dtype=src)]


def _clip_vjp(ctx, dy):
    kept = ctx.equal(ctx.x[0], ctx.y[0])  # min <= x <= max: the clip changed nothing
    return [ctx.where(kept, dy, ctx.scalar(0.0, ctx.dtype(dy)))]


def _where_vjp(ctx, dy):
    c, a, b = ctx.x
    zero = ctx.scalar(0.0, ctx.dtype(dy))
    return [None,
            ctx.unbroadcast(ctx.where(c, dy, zero), a) if ctx.needs[1] else None,
            ctx.unbroadcast(ctx.where(c, zero, dy), b) if ctx.needs[2] else None]


for _name in UNARY:
    get(_name).vjp = _unary_vjp(_name)
get("add").vjp = _add_vjp
get("sub").vjp = _sub_vjp
get("mul").vjp = _mul_vjp
get("div").vjp = _div_vjp
get("maximum").vjp = _select_vjp(False)
get("minimum").vjp = _select_vjp(True)
get("pow").vjp = _pow_vjp
get("add_n").vjp = _add_n_vjp
get("cast").vjp = _cast_vjp
get("identity").vjp = lambda ctx, dy: [dy]
get("dropout").vjp = lambda ctx, dy: [dy]  # the inference form is the identity
get("clip").vjp = _clip_vjp
get("where").vjp = _where_vjp
get("broadcast_like").vjp = lambda ctx, dy: [ctx.unbroadcast(dy, ctx.x[0]), None]


# ---------------------------------------------------------------------------- ONNX (training ops)
# ``to_onnx(ctx, op)`` facets of the ops autodiff and training graphs add.

def onnx_activation_derivative(ctx, name: str, x: str, attrs=None) -> str:
    """f'(x) for activation ``name`` on ONNX value ``x`` (not "linear"): the ``UNARY_DERIV`` formulas."""
    a = {**UNARY[name][1], **dict(attrs or {})}
    dtype = ctx.input_type(0).dtype

    def c(v: float) -> str:
        return ctx.scalar(v, dtype)

    def elu_d(alpha: float) -> str:
        neg = ctx.node("Mul", [ctx.node("Exp", [ctx.node("Min", [x, c(0.0)])]), c(alpha)])
        return ctx.node("Where", [ctx.node("Greater", [x, c(0.0)]), c(1.0), neg])

    if name == "relu":
        above = ctx.node("Greater", [x, c(a["threshold"])])
        d = ctx.node("Where", [above, c(1.0), c(a["negative_slope"])])
        if a["max_value"] is not None:
            leak = ctx.node("Mul", [ctx.node("Sub", [x, c(a["threshold"])]), c(a["negative_slope"])])
            y = ctx.node("Where", [above, x, leak])
            d = ctx.node("Mul", [d, ctx.cast(ctx.node("Less", [y, c(a["max_value"])]), dtype)])
        return d
    if name in ("sigmoid", "silu"):
        s = ctx.node("Sigmoid", [x])
        one_minus = ctx.node("Sub", [c(1.0), s])
        if name == "sigmoid":
            return ctx.node("Mul", [s, one_minus])
        return ctx.node("Mul", [s, ctx.node("Add", [c(1.0), ctx.node("Mul", [x, one_minus])])])
    if name == "tanh":
        t = ctx.node("Tanh", [x])
        return ctx.node("Sub", [c(1.0), ctx.node("Mul", [t, t])])
    if name == "exp":
        return ctx.node("Exp", [x])
    if name == "log":
        return ctx.node("Reciprocal", [x])
    if name == "neg":
        return ctx.filled(ctx.shape_of(x), -1.0, dtype)
    if name == "abs":
        return ctx.node("Sign", [x])
    if name == "sqrt":
        return ctx.node("Div", [c(0.5), ctx.node("Sqrt", [x])])
    if name == "square":
        return ctx.node("Mul", [x, c(2.0)])
    if name == "reciprocal":
        return ctx.node("Neg", [ctx.node("Reciprocal", [ctx.node("Mul", [x, x])])])
    if name == "softplus":
        return ctx.node("Sigmoid", [x])
    if name == "softsign":
        p = ctx.node("Add", [ctx.node("Abs", [x]), c(1.0)])
        return ctx.node("Reciprocal", [ctx.node("Mul", [p, p])])
    if name == "elu":
        return elu_d(float(a["alpha"]))
    if name == "selu":
        return ctx.node("Mul", [elu_d(SELU_ALPHA), c(SELU_SCALE)])
    if name == "hard_sigmoid":
        inside = ctx.node("And", [ctx.node("Greater", [x, c(-3.0)]), ctx.node("Less", [x, c(3.0)])])
        return ctx.node("Div", [ctx.cast(inside, dtype), c(6.0)])
    if name == "hard_silu":
        ramp = ctx.node("Add", [ctx.node("Div", [x, c(3.0)]), c(0.5)])
        upper = ctx.node("Where", [ctx.node("Greater", [x, c(3.0)]), c(1.0), ramp])
        return ctx.node("Where", [ctx.node("Less", [x, c(-3.0)]), c(0.0), upper])
    if name == "mish":
        t = ctx.node("Tanh", [ctx.node("Softplus", [x])])
        slope = ctx.node("Mul", [ctx.node("Sub", [c(1.0), ctx.node("Mul", [t, t])]), ctx.node("Sigmoid", [x])])
        return ctx.node("Add", [t, ctx.node("Mul", [x, slope])])
    if name == "gelu":
        if a["approximate"]:
            k = math.sqrt(2.0 / math.pi)
            x2 = ctx.node("Mul", [x, x])
            inner = ctx.node("Mul", [ctx.node("Add", [x, ctx.node("Mul", [ctx.node("Mul", [x2, x]), c(0.044715)])]),
                                     c(k)])
            t = ctx.node("Tanh", [inner])
            first = ctx.node("Mul", [ctx.node("Add", [t, c(1.0)]), c(0.5)])
            dt = ctx.node("Sub", [c(1.0), ctx.node("Mul", [t, t])])
            poly = ctx.node("Add", [c(1.0), ctx.node("Mul", [x2, c(3 * 0.044715)])])
            second = ctx.node("Mul", [ctx.node("Mul", [ctx.node("Mul", [x, dt]), poly]), c(0.5 * k)])
            return ctx.node("Add", [first, second])
        cdf = ctx.node("Mul", [ctx.node("Add", [ctx.node("Erf", [ctx.node("Mul", [x, c(1 / math.sqrt(2.0))])]),
                                                c(1.0)]), c(0.5)])
        pdf = ctx.node("Div", [ctx.node("Exp", [ctx.node("Mul", [ctx.node("Mul", [x, x]), c(-0.5)])]),
                               c(math.sqrt(2.0 * math.pi))])
        return ctx.node("Add", [cdf, ctx.node("Mul", [x, pdf])])
    raise ctx.error(f"activation {name!r} has no ONNX derivative")


def _unary_grad_to_onnx(ctx, op):
    x, dy = ctx.input_name(0), ctx.input_name(1)
    name = ctx.attrs["activation"]
    if name == "linear":
        ctx.node("Expand", [dy, ctx.shape_of(x)], ctx.output_name(0))
        return
    d = onnx_activation_derivative(ctx, name, x, ctx.attrs["activation_attrs"])
    if name in SELECTED_GRADIENT:
        dtype = ctx.input_type(0).dtype
        zero = ctx.scalar(0.0, dtype)
        ctx.node("Where", [ctx.node("Equal", [d, zero]), zero, ctx.node("Mul", [dy, d])], ctx.output_name(0))
        return
    ctx.node("Mul", [dy, d], ctx.output_name(0))


def _greater_equal_to_onnx(ctx, op):
    if ctx.opset >= 12:
        ctx.node("GreaterOrEqual", list(op.inputs), ctx.output_name(0))
    else:
        ctx.node("Not", [ctx.node("Less", list(op.inputs))], ctx.output_name(0))


def _broadcast_like_to_onnx(ctx, op):
    ctx.node("Expand", [ctx.input_name(0), ctx.shape_of(ctx.input_name(1))], ctx.output_name(0))


def _num_elements_to_onnx(ctx, op):
    x = ctx.input_type(0)
    axes = list(range(x.rank)) if ctx.attrs["axes"] is None else [a % x.rank for a in ctx.attrs["axes"]]
    dtype = ctx.output_type(0).dtype
    sizes = [x.shape[a] for a in axes]
    if all(isinstance(d, int) for d in sizes):
        ctx.node("Identity", [ctx.scalar(int(np.prod(sizes, dtype=np.int64)), dtype)], ctx.output_name(0))
        return
    picked = ctx.node("Gather", [ctx.shape_of(ctx.input_name(0)), ctx.ints(axes)], axis=0)
    ctx.cast(ctx.reduce("ReduceProd", picked, [0], False), dtype, ctx.output_name(0))


def _one_hot_to_onnx(ctx, op):
    """ids[..., None] == arange(depth), cast (onnxruntime's OneHot lacks most type combinations)."""
    ids = ctx.unsqueeze(ctx.input_name(0), [ctx.input_type(0).rank])
    classes = ctx.constant(np.arange(ctx.attrs["depth"], dtype=ctx.input_type(0).dtype), "classes")
    ctx.cast(ctx.node("Equal", [ids, classes]), ctx.output_type(0).dtype, ctx.output_name(0))


def _random_uniform_like_to_onnx(ctx, op):
    seed = ctx.attrs["seed"]
    ctx.node("RandomUniformLike", [ctx.input_name(0)], ctx.output_name(0),
             seed=None if seed is None else float(seed))


get("unary_grad").to_onnx = _unary_grad_to_onnx
get("where").to_onnx = _node_to_onnx("Where")
get("greater").to_onnx = _node_to_onnx("Greater")
get("greater_equal").to_onnx = _greater_equal_to_onnx
get("less").to_onnx = _node_to_onnx("Less")
get("equal").to_onnx = _node_to_onnx("Equal")
get("broadcast_like").to_onnx = _broadcast_like_to_onnx
get("num_elements").to_onnx = _num_elements_to_onnx
get("one_hot").to_onnx = _one_hot_to_onnx
get("random_uniform_like").to_onnx = _random_uniform_like_to_onnx


def _random_normal_like_to_onnx(ctx, op):
    seed = ctx.attrs["seed"]
    ctx.node("RandomNormalLike", [ctx.input_name(0)], ctx.output_name(0),
             seed=None if seed is None else float(seed))


get("random_normal_like").to_onnx = _random_normal_like_to_onnx


# ---------------------------------------------------------------------------- native: training ops
# ``lower`` facets of the ops training graphs add (activation derivatives, where, comparisons,
# broadcast_like, num_elements, one_hot); the derivatives mirror ``UNARY_DERIV`` over VMath.

def _native_d_relu(m, x, negative_slope=0.0, max_value=None, threshold=0.0):
    one = m.const(1.0, x)
    above = m.cmp(">", x, threshold)
    d = m.select(above, one, m.const(negative_slope, x))
    if max_value is not None:
        y = m.select(above, x, m.mul(m.sub(x, threshold), negative_slope))
        d = m.select(m.cmp("<", y, max_value), d, m.const(0.0, x))
    return d


def _native_d_elu(m, x, alpha=1.0):
    return m.select(m.cmp(">", x, 0.0), m.const(1.0, x), m.mul(m.exp(m.minimum(x, 0.0)), alpha))


def _native_d_gelu(m, x, approximate=False):
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        t = m.tanh(m.mul(m.add(x, m.mul(m.mul(m.mul(x, x), x), 0.044715)), c))
        inner = m.mul(m.mul(m.mul(x, 0.5), m.sub(m.const(1.0, x), m.mul(t, t))),
                      m.mul(m.add(m.mul(m.mul(x, x), 3 * 0.044715), 1.0), c))
        return m.add(m.mul(m.add(t, 1.0), 0.5), inner)
    cdf = m.mul(m.add(m.erf(m.mul(x, 1.0 / math.sqrt(2.0))), 1.0), 0.5)
    pdf = m.mul(m.exp(m.mul(m.mul(x, x), -0.5)), 1.0 / math.sqrt(2.0 * math.pi))
    return m.add(cdf, m.mul(x, pdf))


def _native_d_sigmoid(m, x):
    s = m.sigmoid(x)
    return m.mul(s, m.sub(m.const(1.0, x), s))


def _native_d_hard_silu(m, x):
    upper = m.select(m.cmp(">", x, 3.0), m.const(1.0, x), m.add(m.mul(x, 1.0 / 3.0), 0.5))
    return m.select(m.cmp("<", x, -3.0), m.const(0.0, x), upper)


def _native_d_mish(m, x):
    t = m.tanh(_native_softplus(m, x))
    return m.add(t, m.mul(x, m.mul(m.sub(m.const(1.0, x), m.mul(t, t)), m.sigmoid(x))))


NATIVE_UNARY_DERIV = {
    "relu": _native_d_relu,
    "sigmoid": _native_d_sigmoid,
    "tanh": lambda m, x: m.sub(m.const(1.0, x), m.mul(m.tanh(x), m.tanh(x))),
    "exp": lambda m, x: m.exp(x),
    "log": lambda m, x: m.div(m.const(1.0, x), x),
    "neg": lambda m, x: m.const(-1.0, x),
    "abs": lambda m, x: m.sign(x),
    "sqrt": lambda m, x: m.div(m.const(0.5, x), m.sqrt(x)),
    "square": lambda m, x: m.mul(x, 2.0),
    "reciprocal": lambda m, x: m.div(m.const(-1.0, x), m.mul(x, x)),
    "softplus": lambda m, x: m.sigmoid(x),
    "softsign": lambda m, x: m.div(m.const(1.0, x), m.mul(m.add(m.abs(x), 1.0), m.add(m.abs(x), 1.0))),
    "selu": lambda m, x: m.mul(_native_d_elu(m, x, SELU_ALPHA), SELU_SCALE),
    "elu": _native_d_elu,
    "gelu": _native_d_gelu,
    "hard_sigmoid": lambda m, x: m.select(m.b.and_(m.cmp(">", x, -3.0), m.cmp("<", x, 3.0)),
                                          m.const(1.0 / 6.0, x), m.const(0.0, x)),
    "silu": lambda m, x: m.mul(m.sigmoid(x), m.add(m.mul(x, m.sub(m.const(1.0, x), m.sigmoid(x))), 1.0)),
    "hard_silu": _native_d_hard_silu,
    "mish": _native_d_mish,
}


def _unary_grad_lower(kb, op, x, dy, *, out, activation, activation_attrs):
    if activation == "linear":
        kb.map(out, [dy], lambda m, g: g, name="unary_grad_linear")
        return
    deriv = NATIVE_UNARY_DERIV[activation]
    attrs = dict(activation_attrs)

    def grad(m, v, g):
        d = deriv(m, v, **attrs)
        if activation in SELECTED_GRADIENT:
            return m.select(m.cmp("==", d, 0.0), m.const(0.0, v), m.mul(g, d))
        return m.mul(g, d)

    kb.map(out, [x, dy], grad, name=f"d_{activation}")


def _compare_lower(predicate: str):
    def lower(kb, op, a, b, *, out):
        kb.map(out, [a, b], lambda m, x, y: m.cmp(predicate, x, y), name=op.type)

    return lower


def _num_elements_lower(kb, op, x, *, out, axes, dtype):
    from graphc.ir import dims as _dims

    shape = x.shape if axes is None else [x.shape[a] for a in axes]
    kb.store_dim(out, _dims.product(shape))


get("unary_grad").lower = _unary_grad_lower
get("where").lower = lambda kb, op, c, a, b, *, out: kb.map(out, [c, a, b],
                                                            lambda m, cv, x, y: m.select(m.truthy(cv), x, y),
                                                            name="where")
for _name, _predicate in (("greater", ">"), ("greater_equal", ">="), ("less", "<"), ("equal", "==")):
    get(_name).lower = _compare_lower(_predicate)
get("broadcast_like").lower = lambda kb, op, a, like, *, out: kb.map(out, [a], lambda m, v: v, name="broadcast")
get("num_elements").lower = _num_elements_lower
get("one_hot").lower = lambda kb, op, ids, *, out, depth, dtype: kb.one_hot(out, ids, depth)


def _random_uniform_like_lower(kb, op, x, *, out, seed):
    """Counter-based hash of (seed, op, call number, index): new values every call (see
    graphc/backends/llvm/kernels/random.py)."""
    from graphc.backends.llvm.kernels.random import emit_random_uniform

    emit_random_uniform(kb, out, seed)


get("random_uniform_like").lower = _random_uniform_like_lower


def _random_normal_like_lower(kb, op, x, *, out, seed):
    """Box–Muller on the counter-based hash (see graphc/backends/llvm/kernels/random.py)."""
    from graphc.backends.llvm.kernels.random import emit_random_normal

    emit_random_normal(kb, out, seed)


get("random_normal_like").lower = _random_normal_like_lower
