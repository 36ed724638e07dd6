"""Which poolings the convolution before them does, so that the unpooled result is never written.

A convolution followed by a pooling whose window is its stride (``MaxPooling2D(2)`` after a
``Conv2D``, ``MaxPooling1D(5)`` after a ``Conv1D``: the pattern of most small image and text
classifiers, and of VGG) wrote the whole convolution result and read it back once to keep a quarter (or a
fifth) of it. Here the convolution's kernel writes the pooled result:

- on the GEMM (implicit GEMM, im2col, separable, 1x1), a work item computes a run of bands of pixels
  (the rows one row of the pooled result needs) into a strip of the thread's scratch (L2-sized) and pools
  the strip, panel by panel while it is in L1 (:mod:`.kernels.pool_fused`);
- by Winograd, where the window is the algorithm's output tile (2x2 after a 3x3, 1x2 after a 1x7), each
  tile's outputs are pooled as they leave the output transform (:mod:`.kernels.winograd`).

The unpooled result gets no buffer, and the pooling no kernel. What remains of the pooling is its
arithmetic. On a 2-core AMD Zen 4, ``python -m benchmarks.switch_models GRAPHC_POOL_FUSION=0 --models
separable_conv_bn,residual,conv1d_text --batch 1,32 --threads 1,2 --repeat 21``: the residual example
(a Winograd 3x3 into 128 channels, then 2x2 pooling) 1.05x at batch 32 on one and two threads, 1.03x /
1.10x at batch 1; separable_conv_bn at batch 32 1.10x on one thread (2.76 -> 2.52 ms); conv1d_text
1.01-1.04x; separable_conv_bn at batch 1 1.00x / 1.04x.

A pooling is done by its producer when:

- it is a ``max_pool`` or ``avg_pool`` whose window equals its strides, without padding, over static
  spatial sizes and channels, of float32 values;
- its input is the only result of a ``fused_conv``, ``fused_separable_conv`` or ``fused_matmul``,
  read by nothing else and no graph output;
- the producer's kernel is the float32 GEMM, or Winograd (on float32 or bf16 products) with the window
  its tile: the kernel takes the request (:meth:`KernelBuilder.take_pool`); where the convolution runs
  another way (the bf16 GEMM, depthwise or grouped kernels, Winograd under another window), nobody takes
  it, and the result is written and pooled as before.

``GRAPHC_POOL_FUSION=0`` keeps every pooling a kernel of its own (part of the build cache key), for
measuring: ``python -m benchmarks.switch_models GRAPHC_POOL_FUSION=0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.backends.llvm import switches
from graphc.ir.graph import Graph
from graphc.ops.pool import pool_geometry

ENV = switches.POOL_FUSION.name
# the op types whose kernels may take a pooling (which of their kernels do is decided by the kernels,
# KernelBuilder.take_pool); ops of other types are not asked, so that their kernels, keyed by the
# request too, stay shared with the same ops unpooled
PRODUCERS = frozenset({"fused_conv", "fused_separable_conv", "fused_matmul"})
POOLS = {"max_pool": "max", "avg_pool": "avg"}


@dataclass(frozen=True)
class FusedPool:
    """The pooling op ``op_id`` (``kind`` over ``window``) of a producer's result, into ``result``."""

    op_id: str
    kind: str  # "max" or "avg"
    window: tuple[int, ...]
    result: str  # the pooled value


def enabled() -> bool:
    """``GRAPHC_POOL_FUSION``: "1" (default) or "0"."""
    return switches.POOL_FUSION.on()


def fusable_pools(graph: Graph) -> dict[str, FusedPool]:
    """Producer result -> the pooling its GEMM may do, for every pair that qualifies (module docstring)."""
    if not enabled():
        return {}
    outputs = set(graph.outputs)
    found: dict[str, FusedPool] = {}
    for op in graph.ops():
        kind = POOLS.get(op.type)
        if kind is None or len(op.inputs) != 1:
            continue
        v = op.inputs[0]
        producer = graph.producer(v)
        if producer is None or producer.type not in PRODUCERS or len(producer.outputs) != 1 \
                or graph.num_uses(v) != 1 or v in outputs:
            continue
        t = graph.type_of(v)
        if t.dtype != "float32" or t.rank < 3 or not all(isinstance(d, int) for d in t.shape[1:]):
            continue
        kernel, strides, pads = pool_geometry(t.rank, op.attrs.get("kernel"), op.attrs.get("strides"),
                                              op.attrs.get("pads"), op.type)
        if list(kernel) != list(strides) or any(p != (0, 0) for p in map(tuple, pads)) \
                or any(d < w for d, w in zip(t.shape[1:-1], kernel)):
            continue
        found[v] = FusedPool(op.id, kind, tuple(int(k) for k in kernel), op.outputs[0])
    return found
