"""Large batches run as consecutive sub-batches whose activations stay in the caches.

An inference call over a batch runs each op over the whole batch before the next: at batch 32 MobileNetV2's
first expansion writes 154 MB, which the depthwise convolution after it reads back from DRAM, and the model
ran 28 % slower per sample than at batch 1 (259 ms against 32 x 6.1 ms on one thread of a Zen 4). Where no
op mixes the samples of a batch, a call over B samples computes what B / b calls over b of them compute, so
the runtime runs it that way (``gc_instance_run``): the scratch arena planned for b rows, the inputs and
outputs addressed one sub-batch at a time, b chosen whenever the call's free dims change, as the most rows
whose arena fits :func:`budget_bytes` (from the arena one sample needs). The outputs are those of separate
calls over the sub-batches, bit for bit; against one call over the whole batch they may differ in the last
place where a kernel's split of a reduction follows the batch size (a global average pooling at batch 1).

Measured on a 2-core Zen 4 (one process, interleaved builds, ``GRAPHC_BATCH_SPLIT=0`` against the default of
one L2, 1 MB): at batch 32 on one thread MobileNetV2 259 -> 189 ms (1 sample at a time), EfficientNetB0 394 ->
308 ms, the inception example 97.3 -> 86.1 ms, residual 47.8 -> 44.3 ms, separable_conv_bn, multi_output and
conv1d_text 1.01-1.02x; on two threads inception 1.08x, residual 1.01x, separable_conv_bn 1.00x. Budgets of a
few MB (4 MB: inception 2 samples, 87.7 ms) and half the L3 (16 MB: 11 samples, 94.1 ms) left more on the table.

:func:`batch_dim` decides, from the graph alone, whether a model is run so: every input and output leads
with the same free dim (the batch), which appears in no other axis, and every op is one that computes
each sample of its outputs from the same sample of its inputs (elementwise and broadcasting ops whose
batched operands have the output's rank, reductions, softmaxes and concatenations along other axes,
convolutions, poolings and products by weights, products of two batched operands over their leading
dims, recurrent layers, gathers from a table, reshapes that keep the batch leading). Any other op
(anything that reads the batch as a number, reduces or slices along it, or draws random numbers) keeps
the whole batch in one run, as do training steps.

The sub-batches are as even as the batch allows (of n, the first B % n hold one sample more than the rest).
On several threads they run at once, one per thread, each on its own copy of the arena with the plan made
for one thread (``gc__run_workers``), where they share out evenly (as many as a multiple of the threads, so
that each thread's share is within a sample of the others'; or one sample each, at least four per thread);
otherwise one after another, each op split over the threads. Each core then keeps its own sub-batch in its
own L2 and the threads never wait for each other inside the model: at batch 32 on two threads of the Zen 4,
MobileNetV2 146 -> 95 ms (1.99x one thread's 190 ms), ResNet50 1028 -> 908 ms (1.99x), the inception
example 46.7 -> 43.4 ms, separable_conv_bn 1.18 -> 1.16 ms (in 6 sub-batches of 5-6 samples; 1.31 ms with
6 + 6 + 6 against 6 + 6 + 2).

``GRAPHC_BATCH_SPLIT``: unset (the budget is the L2 cache of one core), ``0`` (never split), or the budget
(bytes, or 512K, 2M...); part of the build cache key.
"""

from __future__ import annotations

from graphc.backends.llvm import switches
from graphc.backends.llvm.cache import parse_size
from graphc.backends.llvm.kernels.gemm_blocking import CacheSizes
from graphc.ir import dims
from graphc.ir.graph import Graph, Op
from graphc.ops.registry import get

ENV = switches.BATCH_SPLIT.name

# ops whose every output sample is computed from the same sample of their batched inputs, the batch
# leading each batched value (what else an op must satisfy: _per_sample)
_PER_SAMPLE_OPAQUE = frozenset({
    "conv", "fused_conv", "fused_separable_conv", "conv_transpose", "max_pool", "avg_pool", "matmul",
    "fused_matmul", "lstm", "gru", "simple_rnn", "reverse_time", "qlinear_conv", "qlinear_matmul", "qlinear_add",
})
_INJECTIVE = frozenset({"concat", "expand_dims", "gather", "one_hot", "pad", "reshape", "resize", "slice",
                        "squeeze", "transpose"})
_NOT_PER_SAMPLE = frozenset({"num_elements", "sum_to", "dropout"})  # the batch as a number; training only


def budget_bytes(caches: CacheSizes) -> int:
    """Scratch bytes a sub-batch may use (0: never split): one core's L2 cache, or ``GRAPHC_BATCH_SPLIT``
    (bytes, or a size such as 512K or 2M; a malformed or negative one raises ValueError)."""
    value = switches.BATCH_SPLIT.raw()
    return caches.l2 if value == "" else parse_size(value, ENV)


def batch_dim(graph: Graph) -> str | None:
    """The free dim every input and output of ``graph`` leads with and that no op mixes across, or None."""
    if graph.meta.get("train_step") or graph.meta.get("eval_step") or not graph.inputs or not graph.outputs:
        return None
    lead = graph.type_of(graph.inputs[0]).shape[:1]
    if not lead or isinstance(lead[0], int) or dims.symbols(lead[0]) != {lead[0]}:
        return None  # not a free dim of its own
    dim = lead[0]
    for v in (*graph.inputs, *graph.outputs):
        shape = graph.type_of(v).shape
        if not shape or shape[0] != dim or any(dim in _symbols(d) for d in shape[1:]):
            return None
    for op in graph.ops():
        if not _per_sample(graph, op, dim):
            return None
    return dim


def _symbols(d) -> set[str]:
    return set() if isinstance(d, int) else set(dims.symbols(d))


def _batched(shape: tuple, dim: str) -> bool | None:
    """True: the batch leads ``shape`` as ``dim`` times a constant (its samples' elements contiguous) and
    appears nowhere else; False: the batch is not in it; None: anything else."""
    if not any(dim in _symbols(d) for d in shape):
        return False
    if not shape or any(dim in _symbols(d) for d in shape[1:]):
        return None
    lead = shape[0]
    others = {s: 5 + i for i, s in enumerate(sorted(_symbols(lead) - {dim}))}
    try:
        at = [dims.evaluate(lead, {**others, dim: n}) for n in (1, 2, 3)]
    except (ValueError, KeyError, ZeroDivisionError):
        return None
    return True if at[0] > 0 and at[1] == 2 * at[0] and at[2] == 3 * at[0] else None


def _axes(op: Op, rank: int) -> set[int] | None:
    """The axes an op's ``axis`` / ``axes`` attribute names (its default where not set), normalized; None
    where it names all of them or the op has neither."""
    attrs = get(op.type).resolve_attrs(op.attrs)
    for key in ("axes", "axis"):
        if key in attrs:
            value = attrs[key]
            if value is None:
                return None
            values = value if isinstance(value, (tuple, list)) else (value,)
            return {int(a) % rank if rank else int(a) for a in values}
    return None


def _per_sample(graph: Graph, op: Op, dim: str) -> bool:
    ins = [_batched(graph.type_of(v).shape, dim) for v in op.inputs]
    outs = [_batched(graph.type_of(v).shape, dim) for v in op.outputs]
    if None in ins or None in outs or op.type in _NOT_PER_SAMPLE:
        return False
    if not any(ins):  # computed from weights alone: the same for every sample
        return not any(outs)
    if not all(outs):
        return False
    kind = get(op.type).fusion_kind
    out_rank = graph.type_of(op.outputs[0]).rank
    if kind == "elementwise":
        return True
    if kind == "broadcast":  # a batched operand of another rank would align its batch with another axis
        return all(graph.type_of(v).rank == out_rank for v, b in zip(op.inputs, ins) if b)
    if kind == "reduction":
        rank = graph.type_of(op.inputs[0]).rank
        axes = _axes(op, rank)
        return axes is not None and 0 not in axes
    if op.type in _INJECTIVE:
        if op.type == "gather":  # rows of a weight table by batched ids
            return not ins[0]
        if op.type in ("concat", "slice", "squeeze", "expand_dims", "resize"):
            axes = _axes(op, out_rank if op.type == "expand_dims" else graph.type_of(op.inputs[0]).rank)
            return axes is not None and 0 not in axes
        if op.type == "transpose":
            return tuple(op.attrs.get("perm") or ())[:1] == (0,)
        if op.type == "pad":
            pads = op.attrs.get("pads") or ()
            return not pads or tuple(pads[0]) == (0, 0)
        return op.type in ("reshape", "one_hot")
    if op.type in _PER_SAMPLE_OPAQUE:
        if op.type in ("matmul", "fused_matmul", "qlinear_matmul") and len(ins) > 1 and ins[1]:
            # two batched operands: a product per sample over their leading dims
            return bool(ins[0]) and graph.type_of(op.inputs[0]).rank == graph.type_of(op.inputs[1]).rank >= 3
        return bool(ins[0])  # the data batched; weights, biases (and residuals: batched) follow it
    return False
