"""Which op results the generated code writes over an input that dies at the op.

``graphc.memory``'s plan lets an elementwise op write its result over an input of the same type that no op
reads afterwards (:func:`graphc.memory.liveness.inplace_candidates`); the generated code does it too, with
the same rule: the result gets the input's buffer instead of one of its own, so that the arena holds one
buffer where it held two, and the op writes lines it has just read (in cache) instead of new ones. The
native kernels of these ops (``KernelBuilder.map``, the fused elementwise kernel) read each element of
such an input only where they write the same element of the result, in the same vector, so nothing is
overwritten before it is read, whatever the threads.

The input's buffer is taken when:

- the op is one ``inplace_candidates`` names (elementwise and broadcasting ops, one result of the input's
  type; a fused product's residual input is left out here: the GEMM's partial sums go through its output
  before the epilogue adds the residual);
- the input is an intermediate result of the arena covering its whole buffer (no view at an offset, no
  concatenation part of strided rows, not a bf16 copy) of the result's type, and the result has no buffer
  yet (a graph output writes into the caller's);
- no value held in that buffer (the input, views of it) is read by a later op or is a graph output.

Measured by :func:`graphc.memory.runtime_plan` (the arena reported by the runtime), and
``GRAPHC_RESULT_IN_PLACE=0`` gives every result a buffer of its own (part of the build cache key).
"""

from __future__ import annotations

import os

from graphc.backends.llvm.builder import Tensor
from graphc.ir.graph import Graph, Op
from graphc.memory.liveness import inplace_candidates
from graphc.ops.fused import FUSED_OPS

ENV = "GRAPHC_RESULT_IN_PLACE"


def enabled() -> bool:
    """``GRAPHC_RESULT_IN_PLACE``: "1" (default) or "0"."""
    value = os.environ.get(ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def last_reads(graph: Graph, ops: list[Op]) -> dict[str, int]:
    """The position in ``ops`` of each value's last reader; graph outputs are read after every op."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for v in op.inputs:
            last[v] = i
    for v in graph.outputs:
        last[v] = len(ops)
    return last


def input_to_write_over(graph: Graph, op: Op, index: int, ins: list[Tensor], out: Tensor,
                        tensors: dict[str, Tensor], last: dict[str, int], bf16_held) -> Tensor | None:
    """The input of ``op`` (at position ``index`` of the run) whose buffer its result ``out`` takes, or None."""
    if out.buf is not None or op.type in FUSED_OPS or len(op.outputs) != 1:
        return None
    for pos in inplace_candidates(graph, op):
        x = ins[pos]
        buf = x.buf
        if buf is None or buf.kind != "scratch" or buf.type != out.type or x.type != out.type \
                or x.offset != 0 or x.row_stride is not None or id(buf) in bf16_held:
            continue
        holders = [v for v, t in tensors.items() if t.buf is buf]
        if all(last.get(v, -1) <= index for v in holders):
            return x
    return None
