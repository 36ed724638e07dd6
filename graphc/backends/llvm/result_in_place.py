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

Measured by :mod:`graphc.memory.runtime_plan` (the arena reported by the runtime), and
``GRAPHC_RESULT_IN_PLACE=0`` gives every result a buffer of its own (part of the build cache key).
"""

from __future__ import annotations

from graphc.backends.llvm import switches
from graphc.backends.llvm.builder import Buffer, Tensor
from graphc.ir.graph import Graph, Op
from graphc.memory.liveness import inplace_candidates, last_uses
from graphc.ops.fused import FUSED_OPS

ENV = switches.RESULT_IN_PLACE.name


def enabled() -> bool:
    """``GRAPHC_RESULT_IN_PLACE``: "1" (default) or "0"."""
    return switches.RESULT_IN_PLACE.on()


def input_to_write_over(graph: Graph, op: Op, index: int, ins: list[Tensor], out: Tensor, reads: BufferReads,
                        bf16_held) -> Tensor | None:
    """The input of ``op`` (at position ``index`` of the run) whose buffer its result ``out`` takes, or None."""
    if out.buf is not None or op.type in FUSED_OPS or len(op.outputs) != 1:
        return None
    for pos in inplace_candidates(graph, op):  # inputs of the result's type, as graphc.memory's rule has it
        x = ins[pos]
        buf = x.buf
        if buf is None or buf.kind != "scratch" or buf.type != out.type or x.offset != 0 \
                or x.row_stride is not None or id(buf) in bf16_held:
            continue
        if reads.free_after(buf, index):
            return x
    return None


class BufferReads:
    """The last op that reads a value held in each buffer, kept as ops are lowered (O(1) per question,
    where scanning every tensor for the buffer's holders costs O(values)). A value's buffer is set while
    its producer or a reader is lowered, or, for a concatenation written in place, when its first part's
    producer is: codegen notes the op's inputs and results after it is lowered, and the concatenation
    when it takes its buffer, which covers every holder."""

    def __init__(self, graph: Graph, ops: list[Op]) -> None:
        self.last_use = last_uses(graph, ops)
        self.last: dict[int, int] = {}  # id(buffer) -> the latest last use of a value held in it

    def note(self, tensors: list[Tensor]) -> None:
        """Record the buffers of ``tensors`` (an op's inputs and results, after it is lowered)."""
        for t in tensors:
            if t.buf is not None and t.value is not None:
                key = id(t.buf)
                self.last[key] = max(self.last.get(key, -1), self.last_use.get(t.value, -1))

    def free_after(self, buf: Buffer, index: int) -> bool:
        """Whether nothing held in ``buf`` is read after op ``index`` (nor is a graph output)."""
        return self.last.get(id(buf), -1) <= index
