"""Which parts of a concatenation their producers write straight into the concatenated result.

A concatenation along the last axis (channels, in the NHWC layout graphc runs) was one copy kernel per
part after the parts were computed: every byte written twice and read once more. ``graphc.memory``'s
plan has had concatenation in place since it was written; here the generated code does it too: the
producer of a part gets as its output the part's columns of the concatenated buffer, rows ``C`` apart
(``C`` the concatenation's channels: ``Tensor.row_stride``), and the concatenation copies only the other
parts. InceptionV3's eleven concatenations, 0.4 ms of its 81 on one thread and 1.7 ms of its 43 on two
in its profile, copy nothing; its latency on a 2-core AMD Zen 4 did not change (1.00x on 1 and 2 threads):
the layers after them now read the parts the other core wrote, which the copies had done before them.

A part is written in place when:

- it is the result of an op whose native kernels take a strided output (:data:`PRODUCERS`): float32
  products by a weight and convolutions on the GEMM or Winograd's algorithm, pooling and slices write
  the rows in place; the other convolutions and products (bf16, grouped, depthwise, by a matrix computed
  at run time) go through a temporary and one copy, as before;
- the concatenation is its only reader, once, and it is no graph output (a part read elsewhere would
  be read with the concatenation's row stride, which no other kernel takes);
- the concatenation is along the last axis of static size, the parts' last axes static too.

The concatenated buffer then lives from its first part's producer on: the runtime's arena planner sees
that from the buffer's first use, as it sees every other buffer's.

``GRAPHC_CONCAT_IN_PLACE=0`` copies every part as before (part of the build cache key), for measuring:
``python -m benchmarks.switch_models GRAPHC_CONCAT_IN_PLACE=0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.backends.llvm import switches
from graphc.ir.graph import Graph

# op types whose lowering writes its output only through kernels that honour ``Tensor.row_stride`` or
# through ``KernelBuilder.written_through``
ENV = switches.CONCAT_IN_PLACE.name
PRODUCERS = frozenset({"fused_conv", "fused_matmul", "max_pool", "avg_pool", "slice"})


@dataclass(frozen=True)
class ConcatPart:
    """Value ``part`` is written by its producer into columns ``[column, column + its width)`` of
    ``concat``'s result, whose rows are ``width`` elements long."""

    concat: str  # the concatenation's result
    column: int
    width: int


def enabled() -> bool:
    """``GRAPHC_CONCAT_IN_PLACE``: "1" (default) or "0"."""
    return switches.CONCAT_IN_PLACE.on()


def concat_parts_in_place(graph: Graph) -> dict[str, ConcatPart]:
    """Part value -> where it is written, for every part that qualifies (see the module docstring)."""
    if not enabled():
        return {}
    outputs = set(graph.outputs)
    parts: dict[str, ConcatPart] = {}
    for op in graph.ops():
        if op.type != "concat" or len(op.inputs) < 2:
            continue
        out_type = graph.type_of(op.outputs[0])
        rank = out_type.rank
        if rank < 2 or int(op.attrs.get("axis", -1)) % rank != rank - 1 or not isinstance(out_type.shape[-1], int):
            continue
        widths = [graph.type_of(v).shape[-1] for v in op.inputs]
        if not all(isinstance(w, int) for w in widths):
            continue
        column = 0
        for v, width in zip(op.inputs, widths):
            producer = graph.producer(v)
            if producer is not None and producer.type in PRODUCERS and len(producer.outputs) == 1 \
                    and graph.num_uses(v) == 1 and op.inputs.count(v) == 1 and v not in outputs \
                    and graph.type_of(v).dtype == out_type.dtype:
                parts[v] = ConcatPart(op.outputs[0], column, out_type.shape[-1])
            column += width
    return parts
