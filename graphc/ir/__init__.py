"""graphc's intermediate representation: typed, shape-inferred dataflow graphs."""

from graphc.ir import dims
from graphc.ir.graph import Graph, IRError, Op, Value
from graphc.ir.serialize import load, save
from graphc.ir.types import TensorType, normalize_dtype
from graphc.ir.verify import VerificationError

__all__ = ["Graph", "IRError", "Op", "Value", "TensorType", "VerificationError", "dims",
           "load", "save", "normalize_dtype"]
