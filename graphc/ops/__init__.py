"""Primitive ops: one registry, one module per op family; and the public ``keras.ops`` functions.

Importing this package registers every op. ``REGISTRY[name]`` is an :class:`OpDef` with
the op's attributes, shape rule, NumPy reference and backend facets.

``from graphc import ops`` is also graphc's ``keras.ops``: ``ops.matmul(x, y)``, ``ops.mean``,
``ops.softmax``... (``graphc.frontend.operations``). They are looked up on first use, because the
front end that defines them builds on this package.
"""

from graphc.ops import (  # noqa: F401  (registration)
    collective,
    conv,
    elementwise,
    fused,
    fused_elementwise,
    linalg,
    normalization,
    pool,
    qlinear,
    quantize,
    recurrent,
    reduce,
    shape_ops,
)
from graphc.ops.builder import OpBuilder
from graphc.ops.registry import REGISTRY, OpDef, ShapeError, get, infer_op, register

__all__ = ["REGISTRY", "OpDef", "OpBuilder", "ShapeError", "get", "infer_op", "register"]


def __getattr__(name: str):
    from graphc.frontend import operations

    if name in operations.FUNCTIONS:
        return getattr(operations, name)
    raise AttributeError(f"module 'graphc.ops' has no attribute {name!r}")


def __dir__() -> list[str]:
    from graphc.frontend import operations

    return sorted(set(globals()) | set(operations.FUNCTIONS))
