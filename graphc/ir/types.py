"""Tensor types: a dtype and a shape of (possibly symbolic) dimensions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from graphc.ir import dims as _dims
from graphc.ir.dims import Dim

DTYPES = ("float32", "float64", "float16", "int32", "int64", "int8", "uint8", "bool")
FLOAT_DTYPES = ("float32", "float64", "float16")
INT_DTYPES = ("int32", "int64", "int8", "uint8")
_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "int32": "i32", "int64": "i64",
          "int8": "i8", "uint8": "u8", "bool": "bool"}


def normalize_dtype(dtype) -> str:
    """Canonical dtype name for a numpy dtype, a type or a string ("float32", "int32"...)."""
    if dtype is None:
        return "float32"
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name == "float":
        name = "float32"
    if name == "int":
        name = "int32"
    name = np.dtype(name).name
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; graphc supports {', '.join(DTYPES)}")
    return name


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


@dataclass(frozen=True)
class TensorType:
    """The type of a tensor value: dtype name and shape (ints or symbolic dims)."""

    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) if isinstance(d, (int, np.integer)) else d
                                                for d in self.shape))
        for d in self.shape:
            if not isinstance(d, (int, str)):
                raise TypeError(f"dimension {d!r} in {self.shape} is neither int nor symbol")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def concrete_shape(self, bindings: Mapping[str, int] | None = None) -> tuple[int, ...]:
        return tuple(_dims.evaluate(d, bindings or {}) for d in self.shape)

    def num_elements(self, bindings: Mapping[str, int] | None = None) -> int:
        return int(np.prod(self.concrete_shape(bindings), dtype=np.int64))

    def nbytes(self, bindings: Mapping[str, int] | None = None) -> int:
        return self.num_elements(bindings) * self.itemsize

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{_SHORT.get(self.dtype, self.dtype)}[{', '.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        return TensorType(normalize_dtype(array.dtype), tuple(array.shape))
