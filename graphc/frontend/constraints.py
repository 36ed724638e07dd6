"""Keras 3 weight constraints (MaxNorm, MinMaxNorm, NonNeg, UnitNorm) as IR ops.

A constraint projects a weight after each optimizer update. ``emit(builder, w)`` writes the
projection into the training step graph, right after the optimizer's update of ``w``, so
every backend that runs the step (the reference interpreter, native code) applies it; calling
a constraint on a NumPy array evaluates the same ops. Formulas are Keras's, including its
``epsilon`` (1e-7) in the norm divisions.

``get`` takes None, an instance, a class, a name (``"max_norm"``, ``"non_neg"``, ``"unit_norm"``,
``"min_max_norm"`` or a class name) or a serialized dict; ``serialize`` writes Keras's dict.
"""

from __future__ import annotations

from graphc.frontend.regularizers import EPSILON, evaluate, scalar
from graphc.frontend.state import to_snake_case
from graphc.ops.builder import OpBuilder

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "max_norm", "min_max_norm", "non_neg",
           "unit_norm", "get", "serialize", "deserialize"]


class Constraint:
    """Base class: the identity projection."""

    def emit(self, b: OpBuilder, w: str) -> str:
        """Append the ops projecting weight value ``w``; return the projected value."""
        return w

    def __call__(self, w):
        """The projection of NumPy array ``w``."""
        return evaluate(self.emit, w)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Constraint:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _axes(b: OpBuilder, w: str, axis) -> tuple[int, ...]:
    rank = b.graph.type_of(w).rank
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    for a in axes:
        if not -rank <= int(a) < rank:
            raise ValueError(f"constraint axis {axis} is out of bounds for a weight of rank {rank}")
    return tuple(sorted(int(a) % rank for a in axes))


def _norms(b: OpBuilder, w: str, axis) -> str:
    return b.sqrt(b.reduce_sum(b.square(w), axes=_axes(b, w, axis), keepdims=True))


class MaxNorm(Constraint):
    """Rescales the weights incident to each unit (norm along ``axis``) to a norm of at most ``max_value``."""

    def __init__(self, max_value=2, axis=0):
        self.max_value = max_value
        self.axis = axis

    def emit(self, b, w):
        norms = _norms(b, w, self.axis)
        desired = b.clip(norms, min=0.0, max=float(self.max_value))
        return b.mul(w, b.div(desired, b.add(scalar(b, EPSILON, w, "epsilon"), norms)))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Negative weights become zero."""

    def emit(self, b, w):
        return b.maximum(w, scalar(b, 0.0, w, "zero"))


class UnitNorm(Constraint):
    """Divides the weights incident to each unit by their norm along ``axis``."""

    def __init__(self, axis=0):
        self.axis = axis

    def emit(self, b, w):
        return b.div(w, b.add(scalar(b, EPSILON, w, "epsilon"), _norms(b, w, self.axis)))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Moves each unit's norm towards [min_value, max_value] by ``rate`` (1: all the way)."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = min_value
        self.max_value = max_value
        self.rate = rate
        self.axis = axis

    def emit(self, b, w):
        norms = _norms(b, w, self.axis)
        clipped = b.clip(norms, min=float(self.min_value), max=float(self.max_value))
        desired = b.add(b.mul(scalar(b, self.rate, w, "rate"), clipped),
                        b.mul(scalar(b, 1 - self.rate, w, "one_minus_rate"), norms))
        return b.mul(w, b.div(desired, b.add(scalar(b, EPSILON, w, "epsilon"), norms)))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


# Keras's functional aliases.
max_norm = MaxNorm
min_max_norm = MinMaxNorm
non_neg = NonNeg
unit_norm = UnitNorm

_CLASSES = (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)
_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update({to_snake_case(cls.__name__): cls for cls in _CLASSES})


def serialize(constraint: Constraint | None) -> dict | None:
    """Keras's serialized form (``{"module": "keras.constraints", "class_name": ...}``)."""
    if constraint is None:
        return None
    return {"module": "keras.constraints", "class_name": type(constraint).__name__,
            "config": constraint.get_config(), "registered_name": None}


def deserialize(config: dict, custom_objects: dict | None = None) -> Constraint:
    class_name = config.get("class_name")
    cls = (custom_objects or {}).get(class_name) or _BY_NAME.get(class_name)
    if cls is None:
        raise ValueError(f"unknown constraint class {class_name!r}; graphc knows {', '.join(sorted(_BY_NAME))}")
    return cls.from_config(dict(config.get("config") or {}))


def get(identifier) -> Constraint | None:
    """A constraint from None, an instance, a class, a name or a serialized dict."""
    if identifier is None or isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"Could not interpret constraint identifier: {identifier!r}; graphc knows "
                             f"{', '.join(sorted(_BY_NAME))}")
        return cls()
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    raise ValueError(f"Could not interpret constraint identifier: {identifier!r}. graphc writes constraints "
                     "into its training graphs: pass MaxNorm, MinMaxNorm, NonNeg, UnitNorm (or their names), or "
                     "subclass graphc.constraints.Constraint and define emit(builder, w)")
