"""Keras 3 weight and activity regularizers (L1, L2, L1L2, OrthogonalRegularizer) as IR ops.

A regularizer is a penalty on a tensor: ``emit(builder, x)`` writes it into a graph as a
float scalar (the training step adds it to the loss, and autodiff differentiates it with
the rest), and calling it on a NumPy array evaluates the same ops with the reference
interpreter (``layer.losses``). The formulas and the float32 rounding of the factors are
Keras's (``L1`` keeps its factor as a float32 tensor, so its config reads 0.009999999776...).

``get`` takes what Keras takes: None, an instance, a class, a name (``"l1"``, ``"l2"``,
``"l1l2"``, ``"orthogonal_regularizer"`` or a class name) or a serialized dict;
``serialize`` writes Keras's dict. ``"l1_l2"``, the name Keras's documentation gives (with
factors 0.01 and 0.01), is accepted too, with those factors (Keras 3.15 itself refuses it).
A plain Python function cannot be turned into graph ops and is refused: subclass
:class:`Regularizer` and write ``emit`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.frontend.state import to_snake_case
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops.builder import OpBuilder

__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "l1", "l2", "l1_l2",
           "orthogonal_regularizer", "get", "serialize", "deserialize"]

EPSILON = 1e-7  # keras.backend.epsilon()


def evaluate(emit: Callable[[OpBuilder, str], str], array) -> np.ndarray:
    """Run ``emit(builder, x)`` on a NumPy array with the reference interpreter."""
    from graphc.backends.reference import run

    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    graph = Graph("evaluate")
    x = graph.add_input("x", TensorType(array.dtype.name, array.shape))
    out = emit(OpBuilder(graph, layer=None), x)
    if out == x:
        out = OpBuilder(graph).identity(x)
    graph.set_outputs([out])
    return run(graph, {"x": array})[out]


def sum_all(b: OpBuilder, x: str) -> str:
    rank = b.graph.type_of(x).rank
    return b.reduce_sum(x, axes=tuple(range(rank))) if rank else x


def scalar(b: OpBuilder, value: float, like: str, name: str) -> str:
    return b.constant(np.asarray(value, dtype=b.graph.type_of(like).dtype), name)


def validate_float_arg(value: Any, name: str) -> float:
    """Keras's check: a finite non-negative number."""
    if (isinstance(value, bool) or not isinstance(value, (float, int, np.floating, np.integer))
            or math.isinf(value) or math.isnan(value) or value < 0):
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. Received: "
                         f"{name}={value}")
    return float(value)


class Regularizer:
    """Base class: a penalty on one tensor, written as graph ops by ``emit``."""

    def emit(self, b: OpBuilder, x: str) -> str:
        """Append the ops computing the penalty of ``x``; return the float scalar value."""
        raise NotImplementedError(f"{type(self).__name__} does not define emit(builder, x)")

    def __call__(self, x) -> np.ndarray:
        """The penalty of NumPy array ``x``."""
        return evaluate(self.emit, x)

    def get_config(self) -> dict:
        raise NotImplementedError(f"{self} does not implement get_config()")

    @classmethod
    def from_config(cls, config: dict) -> Regularizer:
        return cls(**config)

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x^2)`` (each term only when its factor is non-zero)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = validate_float_arg(0.0 if l1 is None else l1, name="l1")
        self.l2 = validate_float_arg(0.0 if l2 is None else l2, name="l2")

    def emit(self, b, x):
        penalty = scalar(b, 0.0, x, "regularization")
        if self.l1 != 0.0:
            penalty = b.add(penalty, b.mul(scalar(b, self.l1, x, "l1"), sum_all(b, b.abs(x))))
        if self.l2 != 0.0:
            penalty = b.add(penalty, b.mul(scalar(b, self.l2, x, "l2"), sum_all(b, b.square(x))))
        return penalty

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """``l1 * sum(|x|)``; the factor is kept in float32, as Keras keeps it."""

    def __init__(self, l1=0.01):
        self.l1 = float(np.float32(validate_float_arg(0.01 if l1 is None else l1, name="l1")))

    def emit(self, b, x):
        return b.mul(scalar(b, self.l1, x, "l1"), sum_all(b, b.abs(x)))

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(x^2)``."""

    def __init__(self, l2=0.01):
        self.l2 = validate_float_arg(0.01 if l2 is None else l2, name="l2")

    def emit(self, b, x):
        return b.mul(scalar(b, self.l2, x, "l2"), sum_all(b, b.square(x)))

    def get_config(self):
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """``factor / 2`` times the mean |dot product| of distinct L2-normalized rows (or columns)."""

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = float(np.float32(validate_float_arg(factor, name="factor")))
        if mode not in ("rows", "columns"):
            raise ValueError('Invalid value for argument `mode`. Expected one of {"rows", "columns"}. '
                             f"Received: mode={mode}")
        self.mode = mode

    def emit(self, b, x):
        t = b.graph.type_of(x)
        if t.rank != 2 or not all(isinstance(d, int) for d in t.shape):
            raise ValueError(f"Inputs to OrthogonalRegularizer must have rank 2 and a static shape. Received: "
                             f"inputs.shape={t.shape}")
        axis = 1 if self.mode == "rows" else 0
        # Keras's normalize: x * min(rsqrt(sum(x^2)), 1 / epsilon)
        inv = b.reciprocal(b.sqrt(b.reduce_sum(b.square(x), axes=(axis,), keepdims=True)))
        unit = b.mul(x, b.minimum(inv, scalar(b, 1.0 / EPSILON, x, "inv_epsilon")))
        if self.mode == "rows":
            product, size = b.matmul(unit, b.transpose(unit, perm=(1, 0))), t.shape[0]
        else:
            product, size = b.matmul(b.transpose(unit, perm=(1, 0)), unit), t.shape[1]
        off_diagonal = b.constant((1.0 - np.eye(size)).astype(t.dtype), "off_diagonal")
        total = sum_all(b, b.abs(b.mul(product, off_diagonal)))
        pairs = size * (size - 1.0) / 2.0
        return b.div(b.mul(b.mul(scalar(b, self.factor, x, "factor"), scalar(b, 0.5, x, "half")), total),
                     scalar(b, pairs, x, "num_pairs"))

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


# Keras's functional aliases.
l1 = L1
l2 = L2
l1_l2 = L1L2
orthogonal_regularizer = OrthogonalRegularizer

_CLASSES = (L1, L2, L1L2, OrthogonalRegularizer)
_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update({to_snake_case(cls.__name__): cls for cls in _CLASSES})
_DOCUMENTED_NAMES = {"l1_l2": lambda: L1L2(l1=0.01, l2=0.01)}


def serialize(regularizer: Regularizer | None) -> dict | None:
    """Keras's serialized form (``{"module": "keras.regularizers", "class_name": ...}``)."""
    if regularizer is None:
        return None
    return {"module": "keras.regularizers", "class_name": type(regularizer).__name__,
            "config": regularizer.get_config(), "registered_name": None}


def deserialize(config: dict, custom_objects: dict | None = None) -> Regularizer:
    class_name = config.get("class_name")
    cls = (custom_objects or {}).get(class_name) or _BY_NAME.get(class_name)
    if cls is None:
        raise ValueError(f"unknown regularizer class {class_name!r}; graphc knows {', '.join(sorted(_BY_NAME))}")
    return cls.from_config(dict(config.get("config") or {}))


def get(identifier) -> Regularizer | None:
    """A regularizer from None, an instance, a class, a name or a serialized dict."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _DOCUMENTED_NAMES.get(identifier)
        if cls is None:
            raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}; graphc knows "
                             f"{', '.join(sorted({*_BY_NAME, *_DOCUMENTED_NAMES}))}")
        return cls()
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}. graphc writes regularizers "
                     "into its graphs: pass L1, L2, L1L2, OrthogonalRegularizer (or their names), or subclass "
                     "graphc.regularizers.Regularizer and define emit(builder, x)")
