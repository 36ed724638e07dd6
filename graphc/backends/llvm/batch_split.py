"""Large batches run as consecutive sub-batches whose activations stay in the caches.

An inference call over a batch runs each op over the whole batch before the next: at batch 32 MobileNetV2's
first expansion writes 154 MB, which the depthwise convolution after it reads back from DRAM, and the model
ran 28 % slower per sample than at batch 1 (259 ms against 32 x 6.1 ms on one thread of a Zen 4). Where no
op mixes the samples of a batch, a call over B samples computes what B / b calls over b of them compute, so
the runtime runs it that way (``gc_instance_run``): the scratch arena planned for b rows, the inputs and
outputs addressed one sub-batch at a time, b chosen whenever the call's free dims change, as the most rows
whose arena fits :func:`budget_bytes` (from the arena one sample needs). The outputs are those of separate
calls over the sub-batches, bit for bit, and those of one call over the whole batch too: each float32 kernel
computes a sample's values in the same order whatever the batch (a product's rows sum alike in whole
micro-tiles, edge tiles and single rows: :func:`.kernels.gemm.row_compute`), so neither the sub-batches
nor the thread count that shapes them changes a result (``tests/backends/llvm/test_batch_invariance.py``).

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
a thread starts on a run of n / T consecutive sub-batches, so the batch is shared between those runs first
and each run's share between its sub-batches (32 samples in 6 on two threads: 6 + 5 + 5 each, where the
first two longer would give 17 against 15; conv1d_text at batch 32, 4.83 -> 4.41 ms), as
``gc_instance_sub_batch_start`` reports;
otherwise one after another, each op split over the threads. Each core then keeps its own sub-batch in its
own L2 and the threads never wait for each other inside the model: at batch 32 on two threads of the Zen 4,
MobileNetV2 146 -> 95 ms (1.99x one thread's 190 ms), ResNet50 1028 -> 908 ms (1.99x), the inception
example 46.7 -> 43.4 ms, separable_conv_bn 1.18 -> 1.16 ms (in 6 sub-batches of 5-6 samples; 1.31 ms with
6 + 6 + 6 against 6 + 6 + 2).

A sub-batch reads every weight again, which costs nothing where the weights stay in the caches or the
products over them hide their reads, but a product of one row per sample by weights from memory (VGG16's
fully connected layers, 411 MB for fc1) does 0.5 FLOPs per byte read: run a sample at a time it waits for
the memory once per sample instead of once per call. :func:`rereads_weights` estimates that wait from the
graph (each op's weight bytes at :data:`MEMORY_BALANCE` FLOPs per byte, less the products that hide them)
and the default budget keeps the batch whole where it exceeds :data:`MAX_REREAD_SHARE` of the model's
products, where those ops are not in the batch's tail (below). VGG16 at batch 8 on one thread of the Zen 4,
split a sample at a time against whole: fc1 166 ms (8 x 20.8) against 20.7 ms, the model 1339 against 1100
ms (at batch 32 5175 against 4594 ms); VGG19 at batch 8 1585 against 1406 ms.

The batch's tail (:func:`batch_tail`): the last ops of a model, where every result is small per sample (at
most half of one core's L2) and the weights are large, may run once over the whole batch after the
sub-batches have run the ops before them (``gc__run_batches``: ``run_ops`` over the ops before the tail for
each sub-batch, then over the tail with the batch whole and the pool on each op). The buffers live across
the tail's first op hold the whole batch, led by it (the sub-batches fill them a sample range at a time),
and are planned to live through every sub-batch; the tail's buffers are planned for the whole batch in the
same arena, never beside a sub-batch's. The code generator keeps a tail where running it whole pays: one of
its convolutions takes Winograd over two images or more and not over one (:data:`.kernels.winograd.
TAIL_IMAGES`; ResNet50's conv5 3x3 layers, 16 tiles an image, at batch 32 1886 -> 1809 ms on one thread, 962
-> 941 ms on two: ``benchmarks/results/2026-12-06-switch-batch_tail-0.md``; at batch 1, where the whole
model runs the same kernels for one image, 0.97-0.99x on one thread and 1.02x on two). Elsewhere the tail measured no
gain or a loss: VGG16's (its last block and fully connected layers) 1.01x slower than the whole batch, which
the weights rule above then chooses; at batch 32 on one thread MobileNetV2's 0.94x, InceptionV3's 0.96x
(their tails' results in L2 a sample at a time, in L3 whole). With a tail the outputs are those of the
sub-batches' ops per sub-batch and the tail's over the batch. ``GRAPHC_BATCH_TAIL``: ``1`` (where it pays),
``0`` (never), ``force`` (every candidate, for measuring).

``GRAPHC_BATCH_SPLIT``: unset (the budget is the L2 cache of one core, where the weights allow it), ``0``
(never split), or the budget (bytes, or 512K, 2M...: split wherever the graph allows it); part of the build
cache key, as is ``GRAPHC_BATCH_TAIL``.
"""

from __future__ import annotations

from graphc.backends.llvm import switches
from graphc.backends.llvm.cache import parse_size
from graphc.backends.llvm.kernels.gemm_blocking import CacheSizes
from graphc.bench.op_cost import graph_op_costs
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


# FLOPs one core's float32 FMAs do in the time it reads a byte from memory: 118 GFLOP/s over 32 GB/s
# (triad) measured on a Zen 4 (`graphc bench --peak`), about 4; a core with twice the FMA width has more.
# This counts a product of one row per sample (0.5 FLOPs per byte of float32 weights) as 7/8 waiting, a 1x1
# convolution over 7x7 pixels (24.5) as none
MEMORY_BALANCE = 4.0
# the wait for weights re-read per sample, as a share of the model's products, past which the default budget
# keeps the batch whole: VGG16 5.6 % and VGG19 4.4 % (whose splits, a sample at a time, ran 1.22x and 1.13x
# the whole batch's time at batch 8), against at most 0.8 % for every other keras.applications model over
# the L3 of a Zen 4 (ResNet50 0.37 %, InceptionV3 0.25 %, EfficientNetB4 0.77 %, ConvNeXtTiny 0.12 %)
MAX_REREAD_SHARE = 0.02


def budget_bytes(caches: CacheSizes) -> int:
    """Scratch bytes a sub-batch may use (0: never split): one core's L2 cache, or ``GRAPHC_BATCH_SPLIT``
    (bytes, or a size such as 512K or 2M; a malformed or negative one raises ValueError)."""
    value = switches.BATCH_SPLIT.raw()
    return caches.l2 if value == "" else parse_size(value, ENV)


def split_plan(graph: Graph, dim: str, caches: CacheSizes) -> tuple[int, int | None]:
    """How a large batch of ``graph`` (split along ``dim``) runs: the scratch bytes a sub-batch may use (0:
    the batch runs whole) and the first op of the batch's tail (:func:`batch_tail`, a candidate the code
    generator keeps where it pays; None: none). The default budget (:func:`budget_bytes`) unless the
    sub-batches would re-read weights from memory for every sample (:func:`rereads_weights`, over the ops
    ahead of the tail); a budget set in ``GRAPHC_BATCH_SPLIT`` as it says."""
    budget = budget_bytes(caches)
    tail = batch_tail(graph, dim, caches) if budget else None
    if tail is None:
        return budget_without_tail(graph, dim, caches), None
    if switches.BATCH_SPLIT.raw() == "" and rereads_weights(graph, dim, caches, end=tail):
        return 0, None
    return budget, tail


def budget_without_tail(graph: Graph, dim: str, caches: CacheSizes) -> int:
    """:func:`split_plan`'s budget for ``graph`` with every op run per sub-batch."""
    budget = budget_bytes(caches)
    if budget and switches.BATCH_SPLIT.raw() == "" and rereads_weights(graph, dim, caches):
        return 0
    return budget


def rereads_weights(graph: Graph, dim: str, caches: CacheSizes, end: int | None = None) -> bool:
    """Whether running ``graph``'s ops (those before ``end`` where given) a sample at a time waits for their
    weights more than :data:`MAX_REREAD_SHARE` of their products take: their weights exceed the last-level
    cache (so each sample reads them from memory), and the ops' weight bytes at :data:`MEMORY_BALANCE`
    FLOPs per byte, less the FLOPs of one sample over them, sum to more than that share of one sample's
    FLOPs. False where a shape holds a free dim other than ``dim`` (a sample's work is then unknown at
    build time)."""
    ops = graph.ops()[:end]
    read = {v for op in ops for v in op.inputs if v in graph.constants}
    if sum(graph.constants[v].nbytes for v in read) <= caches.l3:
        return False
    if any(_symbols(d) - {dim} for v in graph.values for d in graph.type_of(v).shape):
        return False  # (a candidate tail's values hold no other free dim: ops past `end` change nothing here)
    total = wait = 0.0
    for op, (flops, _) in zip(ops, graph_op_costs(graph, {dim: 1})):
        weights = sum(graph.constants[v].nbytes for v in dict.fromkeys(op.inputs) if v in graph.constants)
        total += flops or 0
        wait += max(0.0, weights * MEMORY_BALANCE - (flops or 0))
    return wait > MAX_REREAD_SHARE * total


# a sample's bytes of every result from the first op of a batch's tail on: at most half of one core's L2
TAIL_SAMPLE_SHARE = 2


def batch_tail(graph: Graph, dim: str, caches: CacheSizes) -> int | None:
    """The first op (an index into ``graph.ops()``) of a candidate for the batch's tail, which would run once
    over the whole batch after the sub-batches have run the ops before it; None: none (or
    ``GRAPHC_BATCH_TAIL=0``).

    The candidate is the longest run of last ops each of whose results holds at most half of one core's L2
    per sample, reading no graph input, with every graph output among their results and every value they
    read from the ops before it led by the batch (the sub-batches fill it a sample range at a time), and
    weights over L2 (ResNet50's conv5 stage and head, 60 MB; VGG16's last block and fully connected
    layers). The code generator keeps it where running it whole pays (see the module docstring)."""
    if switches.BATCH_TAIL.value() == "0":
        return None
    ops = graph.ops()
    inputs = set(graph.inputs)
    limit = caches.l2 // TAIL_SAMPLE_SHARE
    start = len(ops)
    while start > 0:
        op = ops[start - 1]
        sizes = [_sample_bytes(graph, v, dim) for v in op.outputs]
        if inputs.intersection(op.inputs) or any(n is None or n > limit for n in sizes):
            break
        start -= 1
    if start in (0, len(ops)):
        return None
    before = {v for op in ops[:start] for v in op.outputs}
    if any(v in before and _batched(graph.type_of(v).shape, dim) is not True for op in ops[start:] for v in op.inputs):
        return None
    results = {v for op in ops[start:] for v in op.outputs}
    if not all(v in results for v in graph.outputs):
        return None
    weights = sum(graph.constants[v].nbytes for op in ops[start:] for v in dict.fromkeys(op.inputs)
                  if v in graph.constants)
    return start if weights > caches.l2 else None


def tail_pays(winograd_gains: bool) -> bool:
    """Whether a candidate tail is kept: a convolution of it takes Winograd over the batch and not over one
    sample (``winograd_gains``), or ``GRAPHC_BATCH_TAIL=force``."""
    return winograd_gains or switches.BATCH_TAIL.value() == "force"


def tail_buffer_ok(shape: tuple, dim: str) -> bool:
    """Whether a buffer of ``shape`` may live across the first op of the batch's tail: led by the batch
    (``dim`` times a constant, nowhere else), so that a sub-batch's samples are one contiguous range."""
    return _batched(tuple(shape), dim) is True


def _sample_bytes(graph: Graph, value: str, dim: str) -> int | None:
    """The bytes of one sample of ``value`` (all of it where the batch is not in it); None where another
    free dim is."""
    t = graph.type_of(value)
    if any(_symbols(d) - {dim} for d in t.shape):
        return None
    return t.nbytes({dim: 1})


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
