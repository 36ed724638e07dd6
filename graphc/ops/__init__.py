"""Primitive ops: one registry, one module per op family.

Importing this package registers every op. ``REGISTRY[name]`` is an :class:`OpDef` with
the op's attributes, shape rule, NumPy reference and backend facets.
"""

from graphc.ops import (  # noqa: F401  (registration)
    conv,
    elementwise,
    fused,
    linalg,
    normalization,
    pool,
    recurrent,
    reduce,
    shape_ops,
)
from graphc.ops.builder import OpBuilder
from graphc.ops.registry import REGISTRY, OpDef, ShapeError, get, infer_op, register

__all__ = ["REGISTRY", "OpDef", "OpBuilder", "ShapeError", "get", "infer_op", "register"]
