"""Keras activation names, and how each lowers to IR ops.

Every name ``keras.activations.get`` accepts (Keras 3.15) is here, with Keras's keyword
arguments and defaults. An activation lowers either to one elementwise op of
``graphc.ops.elementwise.UNARY`` (so the optimizer can fuse it into the product before it)
or to a short composition of ops that follows Keras's formula step for step, so every
backend and the gradient come for free. The functional forms (``activations.relu(x)``...)
apply an ``Activation`` layer; with non-default arguments they apply an activation-function
layer that holds them (see ``graphc.frontend.layers.activation``).

Two names need care: ``threshold`` has no defaults for its two arguments (Keras cannot apply
it by name either), so only the functional form takes it; ``sparsemax`` follows Keras's own
formula, whose threshold sums the cumulative sums of the support (not the paper's
definition: Keras's outputs need not sum to one, and graphc's equal Keras's).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.frontend.lowering import LowerContext
from graphc.ops.registry import ShapeError

_REQUIRED = inspect.Parameter.empty


def _scalar(ctx: LowerContext, x: str, value: float, name: str) -> str:
    return ctx.constant(np.asarray(value, dtype=ctx.dtype(x)), name)


def _axis(ctx: LowerContext, name: str, x: str, axis) -> int:
    rank = ctx.rank(x)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -rank <= axis < rank:
        raise ShapeError(f"activation {name!r}: axis {axis!r} is not an axis of an input of rank {rank}")
    return int(axis) % rank


def _glu(ctx: LowerContext, x: str, axis=-1) -> str:
    """a * sigmoid(b), a and b the two halves of x along ``axis``."""
    ax = _axis(ctx, "glu", x, axis)
    size = ctx.shape(x)[ax]
    if not isinstance(size, int) or size % 2:
        raise ShapeError(f"activation 'glu' splits axis {axis} in two halves: its size must be a known even "
                         f"number, got {size}")
    a = ctx.slice(x, axis=ax, start=0, stop=size // 2)
    b = ctx.slice(x, axis=ax, start=size // 2, stop=size)
    return ctx.mul(a, ctx.sigmoid(b))


def _sparsemax(ctx: LowerContext, x: str, axis=-1) -> str:
    """Keras's sparsemax without sorting: element i's place in the descending order is the number
    of elements ahead of it (larger, or equal with a lower index), and the cumulative sum at that
    place is their sum; the support and threshold then follow Keras's formula."""
    ax = _axis(ctx, "sparsemax", x, axis)
    n = ctx.shape(x)[ax]
    if not isinstance(n, int):
        raise ShapeError(f"activation 'sparsemax' needs a known size along axis {axis}, got {n}")
    dtype = ctx.dtype(x)
    rank = ctx.rank(x)
    zi = ctx.expand_dims(x, axis=ax + 1)  # (..., n_i, 1, ...)
    zj = ctx.expand_dims(x, axis=ax)  # (..., 1, n_j, ...)
    ties = np.tril(np.ones((n, n), dtype=dtype)).reshape((n, n) + (1,) * (rank - 1 - ax))  # [i, j]: j <= i
    ahead = ctx.add(ctx.cast(ctx.greater(zj, zi), dtype=dtype),
                    ctx.mul(ctx.cast(ctx.equal(zj, zi), dtype=dtype), ctx.constant(ties, "sparsemax_ties")))
    place = ctx.reduce_sum(ahead, axes=(ax + 1,))
    cumsum = ctx.reduce_sum(ctx.mul(ahead, zj), axes=(ax + 1,))
    one = _scalar(ctx, x, 1.0, "one")
    zero = _scalar(ctx, x, 0.0, "zero")
    support = ctx.greater(ctx.sub(x, ctx.div(ctx.sub(cumsum, one), place)), zero)
    k = ctx.reduce_sum(ctx.cast(support, dtype=dtype), axes=(ax,), keepdims=True)
    total = ctx.reduce_sum(ctx.where(support, cumsum, zero), axes=(ax,), keepdims=True)
    return ctx.relu(ctx.sub(x, ctx.div(ctx.sub(total, one), k)))


def _celu(ctx: LowerContext, x: str, alpha=1.0) -> str:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)): alpha * elu(x / alpha)."""
    if alpha == 1.0:
        return ctx.elu(x)
    scaled = ctx.mul(x, _scalar(ctx, x, 1.0 / alpha, "inv_alpha"))
    return ctx.mul(ctx.elu(scaled), _scalar(ctx, x, alpha, "alpha"))


def _sparse_plus(ctx: LowerContext, x: str) -> str:
    """0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1."""
    one = _scalar(ctx, x, 1.0, "one")
    quarter = ctx.mul(ctx.square(ctx.relu(ctx.add(x, one))), _scalar(ctx, x, 0.25, "quarter"))
    return ctx.where(ctx.greater_equal(x, one), x, quarter)


def _squareplus(ctx: LowerContext, x: str, b=4) -> str:
    root = ctx.sqrt(ctx.add(ctx.square(x), _scalar(ctx, x, b, "b")))
    return ctx.mul(ctx.add(x, root), _scalar(ctx, x, 0.5, "half"))


def _soft_shrink(ctx: LowerContext, x: str, threshold=0.5) -> str:
    """x - clip(x, -t, t): x - t above t, x + t below -t, 0 between."""
    if threshold < 0:  # torch's softshrink refuses it too
        raise ShapeError(f"activation 'soft_shrink': threshold must be >= 0, got {threshold}")
    return ctx.sub(x, ctx.clip(x, min=-float(threshold), max=float(threshold)))


def _hard_shrink(ctx: LowerContext, x: str, threshold=0.5) -> str:
    zero = _scalar(ctx, x, 0.0, "zero")
    return ctx.where(ctx.greater(ctx.abs(x), _scalar(ctx, x, threshold, "threshold")), x, zero)


def _threshold(ctx: LowerContext, x: str, threshold=_REQUIRED, default_value=_REQUIRED) -> str:
    """x where x > threshold, else default_value."""
    return ctx.where(ctx.greater(x, _scalar(ctx, x, threshold, "threshold")), x,
                     _scalar(ctx, x, default_value, "default_value"))


def _sparse_sigmoid(ctx: LowerContext, x: str) -> str:
    """0 for x <= -1, (x + 1) / 2 between, 1 for x >= 1."""
    half = ctx.mul(ctx.add(x, _scalar(ctx, x, 1.0, "one")), _scalar(ctx, x, 0.5, "half"))
    return ctx.clip(half, min=0.0, max=1.0)


def _op(op: str, **fixed) -> Callable[..., str]:
    """An activation that is one IR op; its keyword arguments are the op's attributes."""
    def lower(ctx: LowerContext, x: str, **kwargs) -> str:
        return ctx.emit(op, x, **fixed, **kwargs)

    return lower


def _leaky_relu(ctx: LowerContext, x: str, negative_slope=0.2) -> str:
    return ctx.relu(x, negative_slope=float(negative_slope))


def _relu(ctx: LowerContext, x: str, negative_slope=0.0, max_value=None, threshold=0.0) -> str:
    return ctx.relu(x, negative_slope=float(negative_slope), threshold=float(threshold),
                    max_value=None if max_value is None else float(max_value))


def _elu(ctx: LowerContext, x: str, alpha=1.0) -> str:
    return ctx.elu(x, alpha=float(alpha))


def _gelu(ctx: LowerContext, x: str, approximate=False) -> str:
    return ctx.gelu(x, approximate=bool(approximate))


def _softmax(op: str) -> Callable[..., str]:
    def lower(ctx: LowerContext, x: str, axis=-1) -> str:
        return ctx.emit(op, x, axis=_axis(ctx, op, x, axis))

    return lower


def _signature(fn: Callable, skip: int) -> dict[str, Any]:
    """Keyword arguments (name -> default, ``_REQUIRED`` when none) of a lowering function."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}


# Keras name -> lowering ``fn(ctx, x, **kwargs)`` with Keras's keyword arguments and defaults;
# None is the identity.
_TABLE: dict[str, Callable[..., str] | None] = {
    "linear": None,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "relu6": _op("relu", max_value=6.0),
    "sigmoid": _op("sigmoid"),
    "tanh": _op("tanh"),
    "selu": _op("selu"),
    "elu": _elu,
    "celu": _celu,
    "softplus": _op("softplus"),
    "softsign": _op("softsign"),
    "squareplus": _squareplus,
    "sparse_plus": _sparse_plus,
    "sparse_sigmoid": _sparse_sigmoid,
    "silu": _op("silu"),
    "swish": _op("silu"),
    "gelu": _gelu,
    "glu": _glu,
    "mish": _op("mish"),
    "hard_sigmoid": _op("hard_sigmoid"),
    "hard_silu": _op("hard_silu"),
    "hard_swish": _op("hard_silu"),
    "hard_tanh": _op("clip", min=-1.0, max=1.0),
    "tanh_shrink": lambda ctx, x: ctx.sub(x, ctx.tanh(x)),
    "soft_shrink": _soft_shrink,
    "hard_shrink": _hard_shrink,
    "threshold": _threshold,
    "log_sigmoid": lambda ctx, x: ctx.neg(ctx.softplus(ctx.neg(x))),
    "exponential": _op("exp"),
    "softmax": _softmax("softmax"),
    "log_softmax": _softmax("log_softmax"),
    "sparsemax": _sparsemax,
}

NAMES = tuple(_TABLE)
_ARGUMENTS: dict[str, dict[str, Any]] = {n: {} if fn is None else _signature(fn, 2) for n, fn in _TABLE.items()}


def _needs_arguments(name: str) -> list[str]:
    return [k for k, v in _ARGUMENTS[name].items() if v is _REQUIRED]


def get(identifier) -> str:
    """The canonical Keras name of an activation (None -> "linear"); functions are named by ``__name__``."""
    if identifier is None:
        return "linear"
    if callable(identifier) and getattr(identifier, "__name__", None) in _TABLE:
        identifier = identifier.__name__
    if not isinstance(identifier, str):
        raise ValueError(f"cannot interpret {identifier!r} as an activation; give its name, e.g. 'relu'")
    if identifier not in _TABLE:
        raise ValueError(f"unknown activation {identifier!r}; graphc knows {', '.join(NAMES)}")
    missing = _needs_arguments(identifier)
    if missing:
        raise ValueError(f"activation {identifier!r} needs the arguments {', '.join(missing)}, which a name "
                         f"cannot give; apply graphc.activations.{identifier}(x, {', '.join(missing)}) instead")
    return identifier


def check_arguments(name: str, kwargs: dict) -> dict:
    """``kwargs`` for activation ``name`` with Keras's defaults filled in (TypeError naming what is wrong)."""
    known = _ARGUMENTS[name]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise TypeError(f"activation {name!r} got unexpected argument(s) {unknown}; it takes: {allowed}")
    full = {**known, **kwargs}
    missing = [k for k, v in full.items() if v is _REQUIRED]
    if missing:
        raise TypeError(f"activation {name!r} is missing the argument(s) {', '.join(missing)}")
    return full


def is_default(name: str, kwargs: dict) -> bool:
    """Whether ``kwargs`` are all Keras's defaults for activation ``name``."""
    known = _ARGUMENTS[name]
    return all(k in known and known[k] is not _REQUIRED and known[k] == v for k, v in kwargs.items())


def lower(ctx: LowerContext, name: str, x: str, **kwargs) -> str:
    """Emit the ops of activation ``name`` on value ``x`` (``kwargs``: its Keras arguments)."""
    fn = _TABLE[name]
    if fn is None:
        return x
    if not ctx.dtype(x).startswith("float"):
        raise ShapeError(f"activation {name!r} needs a float tensor, got {ctx.dtype(x)}")
    return fn(ctx, x, **kwargs)


def _make(name: str):
    def fn(x, *args, **kwargs):
        from graphc.frontend.layers.activation import ActivationFunction
        from graphc.frontend.layers.core import Activation

        names = list(_ARGUMENTS[name])
        if len(args) > len(names):
            raise TypeError(f"activation {name!r} takes {len(names)} argument(s) after x, got {len(args)}")
        given = {**dict(zip(names, args)), **kwargs}
        check_arguments(name, given)
        if is_default(name, given):
            return Activation(name)(x)
        return ActivationFunction(name, given)(x)

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = f"Keras's ``{name}`` activation applied to ``x`` (a symbolic tensor or an array)."
    return fn


for _n in NAMES:
    globals()[_n] = _make(_n)
