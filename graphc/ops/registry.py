"""The op registry: every primitive op is declared once, by name, with all its facets.

An :class:`OpDef` carries an op's attribute schema, its shape/dtype rule (``infer``), its
NumPy reference (the oracle every backend is compared with) and slots for its gradient,
ONNX mapping and native lowering, which the op's own family module fills in. Nothing
else in graphc keeps per-op tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphc.ir.types import TensorType


class ShapeError(ValueError):
    """Inputs whose shapes or dtypes an op cannot accept."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

FUSION_KINDS = ("elementwise", "broadcast", "injective", "reduction", "opaque")


@dataclass
class OpDef:
    """Everything graphc knows about one primitive op."""

    name: str
    infer: Callable[..., TensorType | list[TensorType]]
    reference: Callable[..., Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    num_inputs: int | tuple[int, int] | None = None  # exact, (min, max) or None = any >= 1
    num_outputs: int = 1
    fusion_kind: str = "opaque"
    uses_dims: bool = False  # reference takes ``bindings=`` (free dims bound at run time)
    not_differentiable: bool = False
    training_only: bool = False  # appears only in training graphs (gradients, updates); exported in ONNX training steps
    vjp: Callable[..., Any] | None = None
    to_onnx: Callable[..., Any] | None = None
    lower: Callable[..., Any] | None = None

    def resolve_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Attributes with defaults filled in; unknown or missing ones raise ValueError."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ValueError(f"op {self.name!r} has no attribute(s) {sorted(unknown)}; "
                             f"it takes {sorted(self.attrs)}")
        out = {}
        for key, default in self.attrs.items():
            if key in attrs:
                out[key] = _freeze(attrs[key])
            elif default is REQUIRED:
                raise ValueError(f"op {self.name!r} needs attribute {key!r}")
            else:
                out[key] = default
        return out

    def check_arity(self, n: int) -> None:
        spec = self.num_inputs
        if spec is None:
            ok, want = n >= 1, "at least 1"
        elif isinstance(spec, tuple):
            ok, want = spec[0] <= n <= spec[1], f"{spec[0]} to {spec[1]}"
        else:
            ok, want = n == spec, str(spec)
        if not ok:
            raise ShapeError(f"op {self.name!r} takes {want} inputs, got {n}")

    def infer_types(self, input_types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        self.check_arity(len(input_types))
        out = self.infer(input_types, **attrs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


def _freeze(value: Any) -> Any:
    """Lists become tuples so that attributes hash and compare (CSE, caching)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_freeze(v) for v in value)
    return value


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"op {opdef.name!r} is registered twice")
    if opdef.fusion_kind not in FUSION_KINDS:
        raise ValueError(f"op {opdef.name!r}: unknown fusion kind {opdef.fusion_kind!r}")
    REGISTRY[opdef.name] = opdef
    return opdef


def get(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; registered ops: {', '.join(sorted(REGISTRY))}") from None


def infer_op(op, input_types: list[TensorType]) -> list[TensorType]:
    """Shape/dtype rule for an existing IR op (the verifier's hook)."""
    opdef = get(op.type)
    return opdef.infer_types(input_types, opdef.resolve_attrs(op.attrs))
