"""Keras activation names, and how each lowers to IR ops."""

from __future__ import annotations

from graphc.frontend.lowering import LowerContext

# Keras name -> (IR op, attributes); None means the identity.
_TABLE: dict[str, tuple[str, dict] | None] = {
    "linear": None,
    "relu": ("relu", {}),
    "relu6": ("relu", {"max_value": 6.0}),
    "sigmoid": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "selu": ("selu", {}),
    "elu": ("elu", {}),
    "softplus": ("softplus", {}),
    "softsign": ("softsign", {}),
    "swish": ("silu", {}),
    "silu": ("silu", {}),
    "gelu": ("gelu", {}),
    "hard_sigmoid": ("hard_sigmoid", {}),
    "exponential": ("exp", {}),
    "softmax": ("softmax", {"axis": -1}),
    "log_softmax": ("log_softmax", {"axis": -1}),
}

NAMES = tuple(_TABLE)


def get(identifier) -> str:
    """The canonical Keras name of an activation (None -> "linear")."""
    if identifier is None:
        return "linear"
    if callable(identifier) and getattr(identifier, "__name__", None) in _TABLE:
        return identifier.__name__
    if isinstance(identifier, str):
        if identifier not in _TABLE:
            raise ValueError(f"unknown activation {identifier!r}; graphc knows {', '.join(NAMES)}")
        return identifier
    raise ValueError(f"cannot interpret {identifier!r} as an activation; give its name, e.g. 'relu'")


def lower(ctx: LowerContext, name: str, x: str) -> str:
    """Emit the ops of activation ``name`` on value ``x``."""
    entry = _TABLE[name]
    if entry is None:
        return x
    op, attrs = entry
    return ctx.emit(op, x, **attrs)


def _make(name: str):
    def fn(x):
        from graphc.frontend.layers.core import Activation

        return Activation(name)(x)

    fn.__name__ = name
    return fn


for _n in NAMES:
    globals()[_n] = _make(_n)
