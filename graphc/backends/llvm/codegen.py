"""Whole-graph code generation: an IR graph becomes one LLVM module plus a C model descriptor.

For each op in topological order the op's ``lower`` facet is called with the kernel builder
(see :mod:`.builder`); then the module gets the three entry points the runtime calls
(graphc/c_runtime/src/internal.h):

- ``shapes(dims, out_dims, scratch_nbytes)``: output shapes and scratch sizes for the bound
  free dims, after checking that every derived dimension is at least 1 and no size overflows;
- ``prepare(slots, which)``: fills prepacked weights (all, or those of weight ``which``);
- ``run(frame)``: launches every kernel in order through ``gc__parallel_for``.

Weights are laid out in one blob (64-byte aligned entries, in graph order). The descriptor is C
source (names, dtypes, shapes, slots, lifetimes, messages) compiled next to the object file.

A training-step graph (``graph.meta["train_step"]``, see :mod:`graphc.training.step`) also
describes its step: which inputs are targets and hyperparameters, how many leading outputs are
reported (loss, metrics), and each state update as (weight, output), which the runtime writes
over the weight after every ``gc_instance_train_step``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import result_in_place
from graphc.backends.llvm.batch_split import (
    batch_dim,
    budget_without_tail,
    split_plan,
    tail_buffer_ok,
    tail_pays,
)
from graphc.backends.llvm.builder import (
    FRAME_ARGS,
    FRAME_DIMS,
    FRAME_POOL,
    FRAME_PROFILE,
    FRAME_SLOTS,
    Buffer,
    KernelBuilder,
    Launch,
    NativeLoweringError,
    Tensor,
    frame_field,
)
from graphc.backends.llvm.concat_in_place import concat_parts_in_place
from graphc.backends.llvm.in_place import native_schedule
from graphc.backends.llvm.irutil import I32, I64, PTR, VOID, Fn, i32, i64, intrinsic
from graphc.backends.llvm.kernels.gemm_blocking import caches_for
from graphc.backends.llvm.kernels.gemm_items import THREADS_DIM
from graphc.backends.llvm.kernels.pool_fused import StripPool
from graphc.backends.llvm.parallel_emit import compile_parts
from graphc.backends.llvm.pool_fusion import fusable_pools
from graphc.backends.llvm.result_in_place import BufferReads, input_to_write_over
from graphc.backends.llvm.target import TargetInfo, compile_ir, emission_spec, host_target, same_machine
from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops.registry import get

GC_DTYPES = {"float32": 1, "float64": 2, "int32": 3, "int64": 4, "int8": 5, "uint8": 6, "bool": 7, "float16": 8}
ALIGN = 64


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Library names become file names, symbols and macro prefixes: keep them well within every limit.
MAX_SYMBOL = 64


def c_identifier(name: str) -> str:
    """``name`` made into an ASCII C identifier (other characters become ``_``)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)[:MAX_SYMBOL]
    return s if s and not s[0].isdigit() else f"m_{s}"


@functools.cache
def runtime_model_names() -> frozenset[str]:
    """The NAMEs for which ``gc_model_NAME`` is already declared by the runtime's header (``gc_model_t``,
    ``gc_model_input``...): a library named so would redeclare it."""
    header = Path(__file__).resolve().parents[2] / "c_runtime" / "include" / "graphc" / "graphc.h"
    declared = frozenset(re.findall(r"\bgc_model_([A-Za-z0-9_]+)\s*[(;]", header.read_text()))
    return declared - {"NAME"}  # the header's placeholder for a library's own name


def library_symbol(name: str | None, default: str = "model") -> str:
    """The symbol of a library: an explicit ``name`` must already be a C identifier (it names
    ``libNAME.so``, ``NAME.h`` and ``gc_model_NAME``) and not one the runtime uses; without one,
    ``default`` (the model's name) made into one, ``_model`` appended where the runtime uses it."""
    if name is None:
        sym = c_identifier(default)
        return f"{sym}_model" if sym in runtime_model_names() else sym
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or len(name) > MAX_SYMBOL:
        raise ValueError(f"library name {name!r} is not a C identifier: use ASCII letters, digits and underscores, "
                         f"not starting with a digit, at most {MAX_SYMBOL} characters")
    if name in runtime_model_names():
        raise ValueError(f"library name {name!r} is taken: the runtime's header declares gc_model_{name}; choose "
                         f"another name")
    return name


def c_comment(text: str) -> str:
    """``text`` for the inside of a ``/* */`` comment: printable ASCII on one line, with nothing
    that could end the comment (``*/``), open a nested one, form a trigraph (``??/`` is a
    backslash in C11) or splice the next line onto it (a trailing backslash)."""
    ascii_text = text.encode("ascii", "backslashreplace").decode("ascii")
    printable = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in ascii_text)
    safe = re.sub(r"\?(?=\?)", "? ", printable).replace("*/", "* /").replace("/*", "/ *")
    return safe + " " if safe.endswith("\\") else safe


def c_format_literal(text: str) -> str:
    """``text`` as a printf format that prints it verbatim (every ``%`` doubled)."""
    return text.replace("%", "%%")


def c_string(s: str) -> str:
    """``s`` as a C string literal giving back its exact UTF-8 bytes: printable ASCII as is (but
    ``?``, which could start a trigraph), quotes and backslashes escaped, every other byte in octal."""
    out = []
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127 and c != "?":
            out.append(c)
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class WeightEntry:
    name: str
    type: TensorType
    offset: int
    nbytes: int
    slot: int
    trainable: bool


@dataclass
class StepLink:
    """How one model of a two-model library links to the other. A training library holds its training
    step and its evaluation step; both read one weights blob (the training step's layout).

    ``symbol``: the model's symbol prefix instead of its name's; ``layout``: the weights layout to use
    instead of the graph's own; ``weights_symbol``: the embedded blob's symbol; ``model_symbol``: emit
    the model struct under this hidden name, without a ``gc_model_NAME`` getter (the evaluation
    model); ``eval_step``: the evaluation model's struct, which the training model points at;
    ``gradient_step`` / ``apply_step``: the split step's two model structs, and ``gradients`` the
    gradient buffer's entries as (weight, output of the gradient model, byte offset, bytes)."""

    symbol: str | None = None
    layout: tuple[list[WeightEntry], int, int] | None = None
    weights_symbol: str | None = None
    model_symbol: str | None = None
    eval_step: str | None = None
    gradient_step: str | None = None
    apply_step: str | None = None
    gradients: list[tuple[str, int, int, int]] = field(default_factory=list)


@dataclass
class Program:
    """Everything needed to link a model library."""

    name: str
    symbol: str  # C identifier used in symbol names
    objects: list[bytes]  # one, or the parts a large module was compiled in (merged when written)
    descriptor_c: str
    header: str
    weights: list[WeightEntry]
    layout_digest: int
    free_dims: list[str]
    inputs: list[tuple[str, TensorType]]
    outputs: list[tuple[str, TensorType]]
    stats: dict = field(default_factory=dict)

    @property
    def object_code(self) -> bytes:
        """The object, where the module was compiled whole (always so for ``jobs=1``)."""
        if len(self.objects) != 1:
            raise ValueError(f"{self.name}: compiled in {len(self.objects)} parts; link them (native.write_object)")
        return self.objects[0]


def weights_layout(graph: Graph) -> tuple[list[WeightEntry], int, int]:
    """The weights blob's layout: entries (graph order, 64-byte aligned), total size, a digest of it."""
    entries: list[WeightEntry] = []
    offset = 0
    for v, value in graph.values.items():
        if value.kind != "constant":
            continue
        nbytes = int(graph.constants[v].nbytes)
        entries.append(WeightEntry(v, value.type, offset, nbytes, -1, value.trainable))
        offset = _align(offset + nbytes)
    h = hashlib.blake2b(digest_size=8)
    for w in entries:
        h.update(f"{w.name}|{w.type}|{w.offset}|{w.nbytes};".encode())
    return entries, offset, int.from_bytes(h.digest(), "little")


def shared_layout(graph: Graph, layout: tuple[list[WeightEntry], int, int]) -> tuple[list[WeightEntry], int, int]:
    """``graph``'s constants placed where ``layout`` (another graph's) has them: a training library's
    evaluation step reads the training step's weights blob. Every constant must be in it, same type."""
    entries, total, digest = layout
    by_name = {w.name: w for w in entries}
    placed = []
    for v, value in graph.values.items():
        if value.kind != "constant":
            continue
        w = by_name.get(v)
        if w is None or w.type != value.type:
            raise NativeLoweringError(f"constant {v!r} of the evaluation step is not in the training step's weights "
                                      f"(or has another type: {value.type} vs {w.type if w else None})")
        placed.append(WeightEntry(v, value.type, w.offset, w.nbytes, -1, value.trainable))
    return placed, total, digest


def constant_bytes(graph: Graph, name: str) -> np.ndarray:
    """Constant ``name``'s bytes as the library holds them (C order, native byte order), as uint8, read in
    place where the array is contiguous already: what the weights blob, its object and its digest take."""
    return np.ascontiguousarray(graph.constants[name]).reshape(-1).view(np.uint8)


def weights_blob(graph: Graph, entries: list[WeightEntry], total: int) -> bytearray:
    """The weights as the library holds them: each constant's bytes at its entry's offset, zeros between.
    Each constant is copied once, straight into the blob (a model's weights may be hundreds of MB)."""
    blob = bytearray(total)
    view = np.frombuffer(blob, dtype=np.uint8)
    for w in entries:
        view[w.offset:w.offset + w.nbytes] = constant_bytes(graph, w.name)
    return blob


def _op_key(op, attrs: dict, ins: list[Tensor], outs: list[Tensor]) -> tuple:
    """What decides the kernels an op lowers to (see ``_Codegen._record``)."""
    bufs = [t.buf for t in ins] + [t.buf for t in outs]
    sharing = tuple(-1 if b is None else next(i for i, c in enumerate(bufs) if c is b) for b in bufs)
    return (op.type, repr(sorted(attrs.items())), tuple(t.type for t in ins), tuple(t.type for t in outs),
            tuple(t.is_constant for t in ins), tuple(str(t.offset) for t in ins), sharing,
            tuple(t.row_stride for t in outs))


def free_dim_names(graph: Graph) -> list[str]:
    names: list[str] = []
    for v in graph.inputs:
        for d in graph.values[v].type.shape:
            if isinstance(d, str):
                if not d.isidentifier():
                    raise NativeLoweringError(
                        f"input {v!r} has a derived dimension {d!r}; native inputs need plain free dims")
                if d not in names:
                    names.append(d)
    return names


class _Codegen:
    def __init__(self, graph: Graph, name: str, target: TargetInfo, external_weights: bool,
                 link: StepLink | None = None):
        # a training step writes the state updates it can over their weights (ops reordered for it)
        graph, self.in_place = native_schedule(graph)
        self.graph = graph
        self.name = name
        self.link = link or StepLink()
        self.sym = self.link.symbol or c_identifier(name)
        self.target = target
        self.external = external_weights
        self.module = ir.Module(name=f"graphc.{self.sym}")
        self.module.triple = target.triple
        self.free_dims = free_dim_names(graph)
        # kernels also see the instance's thread count, as one more dim after the free ones
        self.kb = KernelBuilder(self.module, target, self.free_dims + [THREADS_DIM])
        self.kb.graph = graph
        self._plan_batches()
        self.tensors: dict[str, Tensor] = {}
        self.concat_parts = concat_parts_in_place(graph)
        self.write_over = result_in_place.enabled()
        self.fused_pools = fusable_pools(graph)
        self.pooled_ops: dict[str, int] = {}  # poolings their producer's kernels did -> the producer's index
        self.op_errors: list[str] = []
        self.memo: dict = {}

    def _plan_batches(self) -> None:
        """The sub-batches' dim, budget and tail (:mod:`.batch_split`), before any op is lowered: the
        tail's convolutions choose their algorithm for the batch."""
        self.split_dim, self.split_budget, self.tail_op = None, 0, None
        dim = batch_dim(self.graph) if self.free_dims else None
        if dim is None or dim not in self.free_dims:
            return
        self.split_dim, self.caches = dim, caches_for(same_machine(self.target, host_target()))
        self.split_budget, self.tail_op = split_plan(self.graph, dim, self.caches)
        self.kb.tail_op = -1 if self.tail_op is None else self.tail_op

    def _check_tail(self) -> None:
        """The batch's tail kept where it pays (:func:`.batch_split.tail_pays`: a convolution of it takes
        Winograd over the batch only, ``kb.tail_gains``) and the lowered code allows it: no graph input read
        from its first op on, every output written there, and every scratch buffer live across that op led
        by the batch (a kernel's buffer may be other than the graph's values). Else every op runs per
        sub-batch, as the split's weights rule then says over all of them."""
        c, dim = self.tail_op, self.split_dim
        if c is None:
            return
        ok = tail_pays(self.kb.tail_gains)
        ok = ok and all(buf.last < c for buf in self.input_bufs) and all(buf.first >= c for buf in self.output_bufs)
        ok = ok and all(tail_buffer_ok(buf.type.shape, dim) for buf in self.kb.buffers
                        if buf.kind == "scratch" and 0 <= buf.first < c <= buf.last)
        if not ok:
            self.tail_op = None
            self.split_budget = budget_without_tail(self.graph, dim, self.caches)

    # ------------------------------------------------------------ buffers
    def _setup(self) -> None:
        g, kb = self.graph, self.kb
        self.input_bufs = []
        for v in g.inputs:
            buf = kb.new_buffer("input", name=v)
            self.input_bufs.append(buf)
            self.tensors[v] = Tensor(v, g.values[v].type, buf)
        self.output_bufs: list[Buffer] = []
        for i, v in enumerate(g.outputs):
            buf = kb.new_buffer("output", name=f"{v}#{i}")
            self.output_bufs.append(buf)
        if self.link.layout is None:
            self.weights, self.weights_nbytes, self.layout_digest = weights_layout(g)
        else:
            self.weights, self.weights_nbytes, self.layout_digest = shared_layout(g, self.link.layout)
        for i, w in enumerate(self.weights):
            buf = kb.new_buffer("weight", name=w.name)
            w.slot = buf.slot
            kb.weight_index[w.name] = i
            self.tensors[w.name] = Tensor(w.name, w.type, buf, constant=np.asarray(g.constants[w.name], order="C"))
        # op results that are graph outputs are written straight into the caller's buffer
        self.primary_output: dict[str, int] = {}
        for i, v in enumerate(g.outputs):
            if g.values[v].kind == "op" and v not in self.primary_output:
                self.primary_output[v] = i

    def _result_in_bf16(self, op) -> bool:
        """Whether ``op`` writes its result in bf16 (``kb.bf16_held``): a bf16 build's embedding gather
        (float32 table, rows of whole 512-bit vectors) whose every reader is a convolution that would
        convert it to bf16 first, and which is no graph output. The gather then writes half the bytes,
        and the convolutions skip their conversion pass (multi_output at batch 32: 19.7 MB written and
        converted, against 9.8 MB written)."""
        if self.kb.target.precision != "bf16" or op.type != "gather" or len(op.outputs) != 1:
            return False
        from graphc.backends.llvm.kernels.conv import conv_reads_bf16_copy
        from graphc.backends.llvm.kernels.gemm_bf16 import LANES

        v = op.outputs[0]
        table = self.graph.values[op.inputs[0]].type
        row = table.shape[-1] if table.rank == 2 else None
        if table.dtype != "float32" or not isinstance(row, int) or row % LANES or v in self.primary_output:
            return False
        readers = self.graph.consumers(v)
        return bool(readers) and all(conv_reads_bf16_copy(self.kb, c, v, self.tensors) for c, _ in readers)

    def _tensor_for_result(self, v: str) -> Tensor:
        if v in self.tensors:  # a concatenation made when its first part in place was lowered
            return self.tensors[v]
        part = self.concat_parts.get(v)
        if part is not None:  # its columns of the concatenated buffer
            whole = self._tensor_for_result(part.concat)
            self.kb.buffer_of(whole)
            self.reads.note([whole])  # the concatenation's buffer is set here, before its op is lowered
            t = Tensor(v, self.graph.values[v].type, whole.buf, dims.add(whole.offset, part.column),
                       row_stride=part.width)
        else:
            t = Tensor(v, self.graph.values[v].type)
            if v in self.primary_output:
                t.buf = self.output_bufs[self.primary_output[v]]
        self.tensors[v] = t
        return t

    # ------------------------------------------------------------ ops
    def lower_ops(self) -> None:
        kb = self.kb
        ops = self.graph.ops()
        self.reads = reads = BufferReads(self.graph, ops)
        for index, op in enumerate(ops):
            opdef = get(op.type)
            where = f"op {op.id!r} ({op.type}" + (f", layer {op.layer!r})" if op.layer else ")")
            if opdef.lower is None:
                raise NativeLoweringError(f"{where}: the native backend has no lowering for {op.type!r}")
            if op.id in self.pooled_ops:  # its producer's kernels wrote the pooled result
                self.op_errors.append(f"{c_format_literal(where)} failed (detail %lld)")
                continue
            kb.op_index = index
            kb.op_label = where
            kb.op_error = None
            kb.op_temps = []
            kb.op = op
            kb.op_unread = frozenset(i for i, v in enumerate(op.outputs) if self.graph.num_uses(v) == 0)
            ins = [self.tensors[v] for v in op.inputs]
            outs = [self._tensor_for_result(v) for v in op.outputs]
            attrs = opdef.resolve_attrs(op.attrs)
            kb.bf16_result = self._result_in_bf16(op)
            held = tuple(t.buf is not None and id(t.buf) in kb.bf16_held for t in ins)
            # a pooling its kernels may do (pool_fusion): the pooled result is one more output of the op's kernels
            fused = self.fused_pools.get(op.outputs[0]) if len(op.outputs) == 1 else None
            if self.write_over and fused is None:  # an elementwise result over an input that dies here
                x = input_to_write_over(self.graph, op, index, ins, outs[0], reads, kb.bf16_held)
                if x is not None:
                    outs[0].buf = x.buf
            kb.pool_request, kb.pool_taken = None, False
            pool_key = None
            if fused is not None:
                pooled = self._tensor_for_result(fused.result)
                kb.pool_request = (outs[0], StripPool(pooled, fused.kind, fused.window, tuple(outs[0].shape[1:-1])))
                pool_key = (fused.kind, fused.window, pooled.type, pooled.row_stride)
                outs = outs + [pooled]
            key = (_op_key(op, attrs, ins, outs), kb.op_unread, kb.bf16_result, held, pool_key, kb.in_tail())
            if key in self.memo:
                record, taken = self.memo[key]
                self._replay(record, ins, outs)
            else:
                start = len(kb.launches)
                try:
                    opdef.lower(kb, op, *ins, out=outs[0] if len(op.outputs) == 1 else tuple(outs), **attrs)
                except NativeLoweringError as exc:
                    raise NativeLoweringError(f"{where}: {exc}") from None
                taken = kb.pool_taken
                if taken and outs[0].buf is not None:  # a kernel took the pooling, another wrote the result
                    raise NativeLoweringError(f"{where}: its result was both pooled and written (internal error)")
                record = self._record(kb.launches[start:], ins, outs)
                if record is not None:
                    self.memo[key] = record, taken
            kb.pool_request = None
            if fused is not None and taken:
                self.pooled_ops[fused.op_id] = index
            if kb.bf16_result:  # the readers take the bf16 rows as their copy (bf16_input)
                from graphc.backends.llvm.kernels.gemm_bf16 import LANES

                n = dims.product(outs[0].shape)
                kb.bf16_held[id(kb.buffer_of(outs[0]))] = kb.view(outs[0], (dims.add(dims.ceildiv(n, 2), LANES),))
            reads.note(ins + outs)
            self.op_errors.append(kb.op_error or f"{c_format_literal(where)} failed (detail %lld)")
        # outputs that are not written by their producer: inputs, constants, repeated values
        kb.op_index = len(ops)
        kb.op_label = "graph outputs"
        for i, v in enumerate(self.graph.outputs):
            if self.primary_output.get(v) == i:
                continue
            dst = Tensor(v, self.graph.values[v].type, self.output_bufs[i])
            kb.copy(dst, self.tensors[v])
        self.op_errors.append("copying the graph outputs failed (detail %lld)")
        self._check_tail()

    def fused_ops(self) -> str:
        """Ops whose kernels another op's kernels are (a pooling done by its convolution), as the runtime's
        op numbers ``"producer:op producer:op..."``, for the profiler to name the kernels by both."""
        index = {op.id: i for i, op in enumerate(self.graph.ops())}
        return " ".join(f"{producer}:{index[op_id]}" for op_id, producer in self.pooled_ops.items())

    # ------------------------------------------------------------ kernel reuse
    # Ops with the same type, attributes, input/output types and buffer-sharing pattern lower to
    # the same kernels: the first one's launches are recorded with the *role* of every argument
    # (input i, output j, temp q, the packing of input i), and later ones replay them with their
    # own tensors, without generating code again (the stereo Xception's two views, its eight
    # identical middle-flow blocks...).

    def _record(self, launches, ins: list[Tensor], outs: list[Tensor]):
        kb = self.kb
        if not launches:
            return None
        for o in outs:
            if any(o.buf is not None and o.buf is x.buf for x in ins):
                return None  # the op aliased its input: nothing to replay
        temps = list(kb.op_temps)

        def role(t: Tensor):
            for i, x in enumerate(ins):
                if t.buf is x.buf:
                    return ("in", i, dims.sub(t.offset, x.offset), t.type)
            for j, y in enumerate(outs):
                if t.buf is y.buf:
                    return ("out", j, dims.sub(t.offset, y.offset), t.type)
            for q, tmp in enumerate(temps):
                if t.buf is tmp.buf:
                    return ("temp", q, t.offset, t.type)
            if t.buf.kind == "packed" and id(t.buf) in kb.pack_sources:
                w, pkey, nbytes, emit = kb.pack_sources[id(t.buf)]
                for i, x in enumerate(ins):
                    if w.buf is x.buf:
                        return ("packed", i, dims.sub(w.offset, x.offset), w.type, pkey, nbytes, emit, t.type)
            return None

        records = []
        for launch in launches:
            roles = [role(t) for t in launch.args]
            if any(r is None for r in roles):
                return None
            records.append((launch.kernel, launch.n, launch.cost, roles))
        message = None
        if kb.op_error is not None:  # the kernel's message without this op's label (fail_message's prefix)
            prefix = c_format_literal(kb.op_label) + ": "
            message = kb.op_error[len(prefix):] if kb.op_error.startswith(prefix) else kb.op_error
        return records, [t.type for t in temps], message

    def _replay(self, memo, ins: list[Tensor], outs: list[Tensor]) -> None:
        kb = self.kb
        records, temp_types, message = memo
        temps = [kb.temp(tt.shape, tt.dtype) for tt in temp_types]
        if message is not None:
            kb.fail_message(message)

        def resolve(r) -> Tensor:
            if r[0] in ("in", "out"):
                base = (ins if r[0] == "in" else outs)[r[1]]
                kb.buffer_of(base)
                return Tensor(None, r[3], base.buf, dims.add(base.offset, r[2]))
            if r[0] == "temp":
                return Tensor(None, r[3], temps[r[1]].buf, r[2])
            _, i, rel, wtype, pkey, nbytes, emit, ttype = r
            x = ins[i]
            const = x.constant.reshape(wtype.shape) if x.constant is not None else None
            packed = kb.packed_weight(Tensor(None, wtype, x.buf, dims.add(x.offset, rel), const), pkey, nbytes,
                                      emit)
            return Tensor(None, ttype, packed.buf, 0)

        for fn, n, cost, roles in records:
            args = [resolve(r) for r in roles]
            for t in args:
                t.buf.touch(kb.op_index)
            kb.launches.append(Launch(fn, n, cost, kb.op_index, args))

    # ------------------------------------------------------------ entry points
    def emit_run(self) -> None:
        """``gcm_SYM_run(frame)``, every launch in turn; with a batch's tail, ``gcm_SYM_run_ops(frame, first,
        end)``, the launches of ops [first, end), and ``run`` calls it for all of them."""
        if self.tail_op is None:
            self._emit_launches(Fn(self.module, f"gcm_{self.sym}_run", I32, [PTR], ["frame"], internal=False))
            return
        ranged = Fn(self.module, f"gcm_{self.sym}_run_ops", I32, [PTR, I32, I32], ["frame", "first", "end"],
                    internal=False)
        self._emit_launches(ranged, ranged.args[1], ranged.args[2])
        run = Fn(self.module, f"gcm_{self.sym}_run", I32, [PTR], ["frame"], internal=False)
        run.b.ret(run.b.call(ranged.fn, [run.args[0], i32(0), i32(2 ** 31 - 1)]))
        run.finish()

    def _emit_launches(self, fn: Fn, first: ir.Value | None = None, end: ir.Value | None = None) -> None:
        """Each launch (of an op in [first, end) where given): its argument addresses into the args array,
        then gc__parallel_for."""
        kb = self.kb
        frame = fn.args[0]
        e = fn.entry
        dims_ptr = e.load(frame_field(e, frame, FRAME_DIMS), typ=PTR)
        fn.set_dims(dims_ptr, self.free_dims + [THREADS_DIM])
        pool = e.load(frame_field(e, frame, FRAME_POOL), typ=PTR)
        slots = e.load(frame_field(e, frame, FRAME_SLOTS), typ=PTR)
        n_args = max([len(launch.args) for launch in kb.launches] + [1])
        args = e.alloca(ir.ArrayType(PTR, n_args), name="args")
        e.store(args, frame_field(e, frame, FRAME_ARGS))
        slot_ptr: dict[int, ir.Value] = {}

        def slot(index: int) -> ir.Value:
            if index not in slot_ptr:
                slot_ptr[index] = e.load(e.gep(slots, [i64(index)], source_etype=PTR), typ=PTR)
            return slot_ptr[index]

        pfor = intrinsic(self.module, "gc__parallel_for", I32, [PTR, PTR, PTR, I64, I64])
        # an instance created with options.profile sets frame->profile: each launch then goes
        # through the runtime's timed twin of gc__parallel_for (graphc/c_runtime/src/profile.c)
        pfor_timed = intrinsic(self.module, "gc__parallel_for_profiled", I32, [PTR, PTR, PTR, I64, I64, I32])
        profiling = e.icmp_unsigned("!=", e.load(frame_field(e, frame, FRAME_PROFILE), typ=PTR),
                                    ir.Constant(PTR, None), name="profiling")
        b = fn.b
        for launch in kb.launches:
            if first is None:
                self._emit_launch(fn, launch, slot, args, pool, frame, pfor, pfor_timed, profiling)
                continue
            index = i32(launch.op_index)
            chosen = b.and_(b.icmp_signed("<=", first, index), b.icmp_signed("<", index, end))
            with b.if_then(chosen):
                self._emit_launch(fn, launch, slot, args, pool, frame, pfor, pfor_timed, profiling)
        b.ret(i32(0))
        fn.finish()

    def _emit_launch(self, fn: Fn, launch, slot, args, pool, frame, pfor, pfor_timed, profiling) -> None:
        """One launch: its arguments, gc__parallel_for (timed where profiling), a failure returned."""
        b = fn.b
        for i, t in enumerate(launch.args):
            p = slot(t.buf.slot)
            if t.offset:
                p = b.gep(p, [fn.dim(t.offset)], source_etype=t.ir_type)
            b.store(p, b.gep(args, [i64(0), i64(i)]))
        n = fn.dim(launch.n)
        call_args = [pool, launch.kernel, frame, n, i64(launch.cost)]
        with b.if_else(profiling, likely=False) as (timed, plain):
            with timed:
                timed_block = b.block
                r_timed = b.call(pfor_timed, call_args + [i32(launch.op_index)])
            with plain:
                plain_block = b.block
                r_plain = b.call(pfor, call_args)
        r = b.phi(I32)
        r.add_incoming(r_timed, timed_block)
        r.add_incoming(r_plain, plain_block)
        with b.if_then(b.icmp_signed("!=", r, i32(0)), likely=False):
            b.ret(i32(launch.op_index + 1))

    def emit_shapes(self) -> None:
        """Checks derived dims, writes output dims and scratch sizes."""
        g = self.graph
        fn = Fn(self.module, f"gcm_{self.sym}_shapes", I32, [PTR, PTR, PTR], ["dims", "out_dims", "sizes"],
                internal=False)
        dims_ptr, out_ptr, sizes_ptr = fn.args
        fn.set_dims(dims_ptr, self.free_dims + [THREADS_DIM])
        b = fn.b
        self.checks: list[str] = []
        seen: set[str] = set()
        for v, value in g.values.items():
            for d in value.type.shape:
                if isinstance(d, str) and not d.isidentifier() and d not in seen:
                    seen.add(d)
                    where = f"value {v!r}" + (f" (layer {value.layer!r})" if value.layer else "")
                    self.checks.append(f"dimension {d} of {where} is less than 1 for these input shapes")
                    with b.if_then(b.icmp_signed("<", fn.dim(d), i64(1)), likely=False):
                        b.ret(i32(len(self.checks)))
        flat = 0
        for v in g.outputs:
            for d in g.values[v].type.shape:
                b.store(fn.dim(d), b.gep(out_ptr, [i64(flat)], source_etype=I64))
                flat += 1
        self.scratch = [buf for buf in self.kb.buffers if buf.kind == "scratch"]
        smul = intrinsic(self.module, "llvm.smul.with.overflow.i64", ir.LiteralStructType([I64, ir.IntType(1)]),
                         [I64, I64])
        self.checks.append("the intermediate tensors would be too large for these input shapes")
        too_large = len(self.checks)
        # a buffer's bytes: its static dims folded into one constant, then one checked product per
        # free dim; buffers of the same size share the computation
        sizes: dict[tuple, ir.Value] = {}
        for k, buf in enumerate(self.scratch):
            static = buf.type.itemsize
            free = []
            for d in buf.type.shape:
                if isinstance(d, int):
                    static *= d
                else:
                    free.append(str(d))
            factors = [static, *sorted(free)] if static < 2 ** 63 else [buf.type.itemsize, *buf.type.shape]
            key = tuple(factors)
            size = sizes.get(key)
            if size is None:
                size = i64(factors[0])
                for d in factors[1:]:
                    res = b.call(smul, [size, fn.dim(d)])
                    with b.if_then(b.extract_value(res, 1), likely=False):
                        b.ret(i32(too_large))
                    size = b.extract_value(res, 0)
                sizes[key] = size
            b.store(size, b.gep(sizes_ptr, [i64(k)], source_etype=I64))
        b.ret(i32(0))
        fn.finish()

    def emit_prepare(self) -> None:
        fn = Fn(self.module, f"gcm_{self.sym}_prepare", VOID, [PTR, I32], ["slots", "which"], internal=False)
        slots, which = fn.args
        b = fn.b
        for pack in self.kb.packs:
            cond = b.or_(b.icmp_signed("<", which, i32(0)), b.icmp_signed("==", which, i32(pack.weight_index)))
            with b.if_then(cond):
                src = b.load(b.gep(slots, [i64(pack.src.buf.slot)], source_etype=PTR), typ=PTR)
                if pack.src.offset:
                    src = b.gep(src, [i64(pack.src.offset)], source_etype=pack.src.ir_type)
                dst = b.load(b.gep(slots, [i64(pack.buf.slot)], source_etype=PTR), typ=PTR)
                pack.emit(fn, src, dst)
        b.ret_void()
        fn.finish()

    # ------------------------------------------------------------ descriptor and header
    def descriptor(self) -> str:
        g, sym = self.graph, self.sym
        lines = [f"/* model '{c_comment(self.name)}' -- generated by graphc; do not edit */",
                 '#include "internal.h"', "",
                 f"int32_t gcm_{sym}_shapes(const int64_t*, int64_t*, int64_t*);",
                 f"void gcm_{sym}_prepare(void**, int32_t);",
                 f"int32_t gcm_{sym}_run(gc_frame_t*);"]
        if self.tail_op is not None:
            lines.append(f"int32_t gcm_{sym}_run_ops(gc_frame_t*, int32_t, int32_t);")
        weights_sym = self.link.weights_symbol or f"gcm_{sym}_weights"
        if not self.external:
            lines.append(f"extern const unsigned char {weights_sym}[];")
        for linked in (self.link.eval_step, self.link.gradient_step, self.link.apply_step):
            if linked:
                lines.append(f"extern const struct gc_model {linked};")
        lines.append("")

        def arr(ctype: str, name: str, items: list[str]) -> str:
            body = ", ".join(items) if items else "0"
            return f"static const {ctype} {name}[] = {{{body}}};"

        def io(kind: str, entries: list[tuple[str, TensorType, int]], is_input: bool) -> None:
            defs = []
            for i, (name, t, slot) in enumerate(entries):
                dvals = []
                for d in t.shape:
                    if isinstance(d, int):
                        dvals.append(str(d))
                    elif is_input:
                        dvals.append(str(-(self.free_dims.index(d) + 1)))
                    else:
                        dvals.append("-1")
                lines.append(arr("int64_t", f"{kind}{i}_dims", [f"{x}LL" for x in dvals]))
                lines.append(arr("char* const", f"{kind}{i}_names", [c_string(str(d)) for d in t.shape]))
                defs.append(f"{{{c_string(name)}, {GC_DTYPES[t.dtype]}, {t.rank}, {kind}{i}_dims, "
                            f"(const char* const*){kind}{i}_names, {slot}}}")
            lines.append(f"static const gc_io_def_t {kind}s[] = {{{', '.join(defs) or '{0}'}}};")

        io("input", [(v, g.values[v].type, self.input_bufs[i].slot) for i, v in enumerate(g.inputs)], True)
        out_names = g.meta.get("output_names") if len(g.meta.get("output_names") or []) == len(g.outputs) else None
        io("output", [((out_names[i] if out_names else v), g.values[v].type, self.output_bufs[i].slot)
                      for i, v in enumerate(g.outputs)], False)
        wdefs = []
        for i, w in enumerate(self.weights):
            lines.append(arr("int64_t", f"weight{i}_dims", [f"{d}LL" for d in w.type.shape]))
            wdefs.append(f"{{{c_string(w.name)}, {GC_DTYPES[w.type.dtype]}, {w.type.rank}, weight{i}_dims, "
                         f"{w.offset}ULL, {w.nbytes}ULL, {w.slot}}}")
        lines.append(f"static const gc_weight_def_t weights[] = {{{', '.join(wdefs) or '{0}'}}};")
        packed_off = 0
        pdefs = []
        for pack in self.kb.packs:
            pdefs.append(f"{{{packed_off}ULL, {pack.buf.slot}}}")
            packed_off = _align(packed_off + pack.buf.nbytes)
        self.packed_nbytes = packed_off
        lines.append(f"static const gc_packed_def_t packed[] = {{{', '.join(pdefs) or '{0}'}}};")
        sdefs = [f"{{{buf.slot}, {buf.first}, {buf.last}, {c_string(buf.name)}}}" for buf in self.scratch]
        lines.append(f"static const gc_scratch_def_t scratch[] = {{{', '.join(sdefs) or '{0}'}}};")
        lines.append(arr("char* const", "free_dims", [c_string(d) for d in self.free_dims]))
        lines.append(arr("char* const", "op_errors", [c_string(m) for m in self.op_errors]))
        lines.append(arr("char* const", "checks", [c_string(c_format_literal(m)) for m in self.checks]))
        weights_ref = "NULL" if self.external else weights_sym
        step = self.train_step_tables()
        lines += step["lines"]
        eval_ref = f"&{self.link.eval_step}" if self.link.eval_step else "NULL"
        split = self.split_step_tables()
        lines += split["lines"]
        struct = (f"__attribute__((visibility(\"hidden\"))) const struct gc_model {self.link.model_symbol}"
                  if self.link.model_symbol else "static const struct gc_model model")
        lines += ["", f"{struct} = {{",
                  f"    GC_MODEL_ABI, {c_string(self.name)},",
                  f"    {len(g.inputs)}, {len(g.outputs)}, {len(self.weights)}, {len(self.kb.packs)}, "
                  f"{len(self.scratch)}, {len(self.kb.buffers)}, {len(self.free_dims)}, {len(self.op_errors)},",
                  "    inputs, outputs, weights, packed, scratch, (const char* const*)free_dims,",
                  f"    {weights_ref}, {self.weights_nbytes}ULL, {self.layout_digest}ULL,",
                  f"    {self.packed_nbytes}ULL, {_align(self.kb.thread_scratch_nbytes)}ULL,",
                  f"    gcm_{sym}_shapes, gcm_{sym}_prepare, gcm_{sym}_run,",
                  "    (const char* const*)op_errors, (const char* const*)checks,",
                  f"    {step['fields']}, {eval_ref},",
                  f"    {split['fields']},",
                  f"    {self.batch_split_fields()},",
                  f"    {c_string(self.target.cpu)}, {c_string(self.target_features())},",
                  "};", ""]
        if not self.link.model_symbol:
            lines += [f"GC_EXPORT const gc_model_t* gc_model_{sym}(void) {{ return &model; }}", ""]
        return "\n".join(lines)

    def train_step_tables(self) -> dict:
        """The step's C tables (``lines``) and the model struct's training fields (``fields``)."""
        g = self.graph
        train = g.meta.get("train_step")
        info = train or g.meta.get("eval_step")  # an evaluation step: inputs, targets, reported; no training
        if not info:
            return {"lines": [], "fields": "0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL"}
        index = {v: i for i, v in enumerate(g.inputs)}
        hypers = info.get("hyperparameters", {})  # name -> (input, initial value)
        targets = [index[t] for t in info["targets"]]
        special = set(targets) | {index[v] for v, _ in hypers.values()}
        step_inputs = [i for i in range(len(g.inputs)) if i not in special]
        out_index = {v: i for i, v in reversed(list(enumerate(g.outputs)))}
        w_index = {w.name: i for i, w in enumerate(self.weights)}
        updates = [(w_index[c], out_index[v], int(c in self.in_place))
                   for c, v in g.meta.get("state_updates", {}).items() if c in w_index] if train else []
        lines = [f"static const int32_t step_inputs[] = {{{', '.join(map(str, step_inputs)) or '0'}}};",
                 f"static const int32_t step_targets[] = {{{', '.join(map(str, targets)) or '0'}}};",
                 "static const gc_hyper_def_t step_hypers[] = {"
                 + (", ".join(f"{{{c_string(n)}, {index[v]}, {float(x)!r}}}" for n, (v, x) in hypers.items()) or "{0}")
                 + "};",
                 "static const gc_update_def_t step_updates[] = {"
                 + (", ".join(f"{{{w}, {o}, {p}}}" for w, o, p in updates) or "{0}") + "};"]
        fields = (f"{int(bool(train))}, {len(step_inputs)}, {len(targets)}, {len(hypers)}, {int(info['reported'])}, "
                  f"{len(updates)}, "
                  "step_inputs, step_targets, step_hypers, step_updates")
        return {"lines": lines, "fields": fields}

    def target_features(self) -> str:
        """The instruction set features the code may use, as the model struct records them for the
        runtime's CPU check (``+avx2,+fma``): the target's ``+`` features, sorted."""
        return ",".join(f"+{f}" for f in sorted(self.target.feature_set))

    def batch_split_fields(self) -> str:
        """The model struct's sub-batch fields: the batch dim's index (-1: none), the budget in bytes, the
        first op of the batch's tail (-1: none) and the function running an op range (:mod:`.batch_split`)."""
        if self.split_dim is None:
            return "-1, 0ULL, -1, NULL"
        tail = "-1, NULL" if self.tail_op is None else f"{self.tail_op}, gcm_{self.sym}_run_ops"
        return f"{self.free_dims.index(self.split_dim)}, {self.split_budget}ULL, {tail}"

    def split_step_tables(self) -> dict:
        """The gradient buffer's table (``lines``) and the model struct's split-step fields (``fields``)."""
        link = self.link
        if not link.gradient_step:
            return {"lines": [], "fields": "NULL, NULL, 0, NULL, 0ULL"}
        w_index = {w.name: i for i, w in enumerate(self.weights)}
        defs = [f"{{{w_index[w]}, {out}, {offset}ULL, {nbytes}ULL}}" for w, out, offset, nbytes in link.gradients]
        total = max((offset + nbytes for _, _, offset, nbytes in link.gradients), default=0)
        lines = [f"static const gc_gradient_def_t gradient_defs[] = {{{', '.join(defs) or '{0}'}}};"]
        fields = (f"&{link.gradient_step}, &{link.apply_step}, {len(defs)}, gradient_defs, {total}ULL")
        return {"lines": lines, "fields": fields}

    def header(self, graphc_h: str) -> str:
        g, sym = self.graph, self.sym
        guard = f"GRAPHC_MODEL_{sym.upper()}_H_"
        doc = [f"/* {sym}.h -- the compiled graphc model '{c_comment(self.name)}': one library (lib{sym}.so or "
               f"lib{sym}.a)",
               " * and this header. The ABI (graphc.h) follows the model's declarations.", " *"]
        out_names = g.meta.get("output_names") if len(g.meta.get("output_names") or []) == len(g.outputs) else None
        for i, v in enumerate(g.inputs):
            doc.append(f" * input {i}: '{c_comment(v)}' {c_comment(str(g.values[v].type))}")
        for i, v in enumerate(g.outputs):
            doc.append(f" * output {i}: '{c_comment(out_names[i] if out_names else v)}' "
                       f"{c_comment(str(g.values[v].type))}")
        if self.free_dims:
            free = c_comment(", ".join(self.free_dims))
            doc.append(f" * free dimensions (bound from the inputs at run time): {free}")
        step = g.meta.get("train_step")
        if step:
            targets = c_comment(", ".join(step["targets"]))
            hypers = c_comment(", ".join(step["hyperparameters"]))
            doc += [" * training step (gc_instance_train_step): its inputs are the inputs above but the targets "
                    f"({targets}) and hyperparameters ({hypers}, gc_instance_set_hyperparameter); it reports "
                    f"outputs 0..{int(step['reported']) - 1} (the loss first) and updates the weights in place"]
        doc.append(" */")
        body = [f"#ifndef {guard}", f"#define {guard}", "", graphc_h.strip(), "",
                "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
                f"#define {sym.upper()}_NUM_INPUTS {len(g.inputs)}",
                f"#define {sym.upper()}_NUM_OUTPUTS {len(g.outputs)}", ""]
        for i, v in enumerate(g.inputs):
            body.append(f"#define {sym.upper()}_INPUT_{c_identifier(v).upper()} {i}")
        for i, v in enumerate(g.outputs):
            body.append(f"#define {sym.upper()}_OUTPUT_{c_identifier(out_names[i] if out_names else v).upper()} {i}")
        body += ["", "/* The model (static, thread-safe, never released). */",
                 f"GC_EXPORT const gc_model_t* gc_model_{sym}(void);", "",
                 "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
        return "\n".join(doc + body)


def generate(graph: Graph, name: str, target: TargetInfo, *, graphc_h: str, external_weights: bool = False,
             opt: int = 3, link: StepLink | None = None, jobs: int = 1) -> Program:
    """Lower ``graph`` to machine code and descriptor sources (no linking); ``link`` ties a training
    library's evaluation step to its training step (see :class:`StepLink`); a large module is compiled
    in up to ``jobs`` processes (:mod:`graphc.backends.llvm.parallel_emit`), its parts left to be
    merged by the linker."""
    import time

    t0 = time.perf_counter()
    cg = _Codegen(graph, name, target, external_weights, link)
    cg._setup()
    cg.lower_ops()
    cg.emit_shapes()
    cg.emit_prepare()
    cg.emit_run()
    desc = cg.descriptor()
    t1 = time.perf_counter()
    text = str(cg.module)
    objects = compile_parts(text, lambda part: compile_ir(part, target, opt=opt), emission_spec(target, opt),
                            prefix=f"gcm_{cg.sym}.", jobs=jobs)
    t2 = time.perf_counter()
    return Program(name=name, symbol=cg.sym, objects=objects, descriptor_c=desc, header=cg.header(graphc_h),
                   weights=cg.weights, layout_digest=cg.layout_digest,
                   free_dims=cg.free_dims,
                   inputs=[(v, graph.values[v].type) for v in graph.inputs],
                   outputs=[(v, graph.values[v].type) for v in graph.outputs],
                   stats={"lower_s": t1 - t0, "llvm_s": t2 - t1, "ir_chars": len(text), "llvm_parts": len(objects),
                          "kernels": len(cg.kb.launches), "fused_ops": cg.fused_ops(),
                          "kernel_functions": len({id(launch.kernel) for launch in cg.kb.launches})})


__all__ = ["generate", "Program", "StepLink", "WeightEntry", "shared_layout",
           "c_identifier", "c_string", "c_comment", "c_format_literal",
           "library_symbol", "dims"]
