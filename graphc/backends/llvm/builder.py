"""The kernel-builder facade: what an op's native ``lower(kb, op, *inputs, out, **attrs)`` sees.

Op family modules never import llvmlite; their lowerings call high-level methods of
:class:`KernelBuilder` (``kb.map``, ``kb.matmul``, ``kb.reduce``, ``kb.copy``...), passing
:class:`Tensor` handles and, for elementwise formulas, functions over a
:class:`~graphc.backends.llvm.vmath.VMath`. Each method emits one or more parallel kernels
(LLVM functions ``i32 (frame*, begin, end, thread)``) and a launch of each in the model's run
function; kernels live in ``graphc/backends/llvm/kernels``.

Buffers: every tensor reads or writes a *buffer* addressed through a slot of the frame (see
graphc/c_runtime/src/internal.h): graph inputs and outputs (caller memory), weights (the read-only
blob), prepacked weights (per instance) and scratch buffers, which the runtime places in one
arena from the lifetimes recorded here (first and last op touching them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir

from graphc.backends.llvm.irutil import DTYPE_IR, I32, I64, PTR, Fn, broadcast, i32, i64
from graphc.backends.llvm.target import TargetInfo
from graphc.backends.llvm.vmath import VMath
from graphc.ir import dims as _dims
from graphc.ir.types import TensorType

# gc_frame_t (graphc/c_runtime/src/internal.h) as an LLVM struct, its fields addressed by index: the
# byte offsets then follow the target's pointer size (8 bytes on x86-64 and aarch64, 4 on wasm32). The
# fields the runtime alone reads (the collective hook, after `profile`) are left out.
FRAME_TYPE = ir.LiteralStructType([PTR, PTR, PTR, PTR, I64, I64, PTR, PTR, PTR])
(FRAME_SLOTS, FRAME_DIMS, FRAME_POOL, FRAME_SCRATCH, FRAME_SCRATCH_STRIDE, FRAME_ERROR, FRAME_ARGS, FRAME_RANDOM,
 FRAME_PROFILE) = range(9)


def frame_field(b: ir.IRBuilder, frame: ir.Value, field: int) -> ir.Value:
    """The address of gc_frame_t field ``field`` (one of the FRAME_* indices) of ``frame``."""
    return b.gep(frame, [i32(0), i32(field)], source_etype=FRAME_TYPE)


class NativeLoweringError(NotImplementedError):
    """An op (or an attribute combination) the native backend cannot compile."""


@dataclass
class Buffer:
    """Memory behind one or more tensors."""

    kind: str  # input | output | weight | packed | scratch
    slot: int
    type: TensorType | None = None  # scratch: the type that sizes it
    nbytes: int = 0  # packed: static size
    first: int = -1
    last: int = -1
    name: str = ""

    def touch(self, op_index: int) -> None:
        if self.first < 0 or op_index < self.first:
            self.first = op_index
        self.last = max(self.last, op_index)


@dataclass
class Tensor:
    """A row-major tensor in a buffer, at an element offset; what lowerings pass around."""

    value: str | None
    type: TensorType
    buf: Buffer | None = None
    offset: int = 0  # in elements
    constant: np.ndarray | None = field(default=None, repr=False)
    # elements from one row of the last axis to the next where that is not the last axis's length:
    # a part of a concatenation along its last axis, written in place by its producer (codegen)
    row_stride: int | None = None

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return self.type.rank

    @property
    def is_constant(self) -> bool:
        return self.constant is not None

    @property
    def ir_type(self) -> ir.Type:
        return DTYPE_IR[self.type.dtype]

    def __str__(self) -> str:
        return f"{self.value or 'view'}: {self.type}"


class Kernel:
    """One parallel task function: ``i32 (frame*, i64 begin, i64 end, i32 thread)``.

    The tensors a kernel touches are its *arguments*: the run function stores their addresses
    in ``frame->args`` before launching it, and the kernel reads them from there. Kernels thus
    name no buffer, and one kernel serves every op of the same shape (see ``KernelBuilder``).
    """

    def __init__(self, kb: KernelBuilder, name: str):
        self.kb = kb
        self.fn = Fn(kb.module, kb.unique(name), I32, [PTR, I64, I64, I32], ["frame", "begin", "end", "thread"])
        self.frame, self.begin, self.end, self.thread = self.fn.args
        e = self.fn.entry
        self._args = e.load(self._field(FRAME_ARGS), typ=PTR, name="args")
        self.fn.set_dims(e.load(self._field(FRAME_DIMS), typ=PTR, name="dims"), kb.free_dims)
        self._ptrs: dict[tuple, ir.Value] = {}
        self.arg_tensors: list[Tensor] = []
        self.b = self.fn.b
        self.m = VMath(self.fn.b)

    def _field(self, field: int) -> ir.Value:
        return frame_field(self.fn.entry, self.frame, field)

    def dim(self, d) -> ir.Value:
        return self.fn.dim(d)

    def ptr(self, t: Tensor) -> ir.Value:
        """Pointer to ``t``'s first element (an argument of the kernel, loaded once in the entry block)."""
        buf = self.kb.buffer_of(t)
        buf.touch(self.kb.op_index)
        key = (buf.slot, str(t.offset), t.dtype)
        p = self._ptrs.get(key)
        if p is None:
            e = self.fn.entry
            index = len(self.arg_tensors)
            self.arg_tensors.append(t)
            p = e.load(e.gep(self._args, [i64(index)], source_etype=PTR), typ=PTR, name=f"arg{index}")
            self._ptrs[key] = p
        return p

    def thread_scratch(self, nbytes: int) -> ir.Value:
        """This thread's private scratch of ``nbytes`` (reserved for the model, 64-byte aligned)."""
        self.kb.thread_scratch_nbytes = max(self.kb.thread_scratch_nbytes, nbytes)
        e = self.fn.entry
        base = e.load(self._field(FRAME_SCRATCH), typ=PTR)
        stride = e.load(self._field(FRAME_SCRATCH_STRIDE), typ=I64)
        return e.gep(base, [e.mul(stride, e.zext(self.thread, I64))], source_etype=ir.IntType(8))

    def fail(self, detail: ir.Value) -> None:
        """Return failure from the current block, with ``detail`` (i64) for the error message."""
        self.b.store(detail, self._field_body(FRAME_ERROR))
        self.b.ret(i32(1))

    def _field_body(self, field: int) -> ir.Value:
        return frame_field(self.b, self.frame, field)

    def load(self, t: Tensor, index, *, lanes: int = 1) -> ir.Value:
        """Element (or ``lanes`` consecutive elements) of ``t`` at flat ``index``."""
        p = self.b.gep(self.ptr(t), [self.dim(index)], source_etype=t.ir_type)
        typ = t.ir_type if lanes == 1 else ir.VectorType(t.ir_type, lanes)
        return self.b.load(p, typ=typ, align=t.type.itemsize)

    def store(self, t: Tensor, index, value: ir.Value) -> None:
        p = self.b.gep(self.ptr(t), [self.dim(index)], source_etype=t.ir_type)
        self.b.store(value, p, align=t.type.itemsize)

    def splat(self, value: ir.Value, lanes: int) -> ir.Value:
        return broadcast(self.b, value, lanes)

    def finish(self) -> ir.Function:
        if not self.b.block.is_terminated:
            self.b.ret(i32(0))
        return self.fn.finish()


@dataclass
class Launch:
    kernel: ir.Function
    n: object  # dim: number of work items
    cost: int  # estimated flops per item
    op_index: int
    args: list[Tensor] = field(default_factory=list)  # the kernel's arguments, in order


@dataclass
class Pack:
    """A prepacked copy of a weight, filled by the model's prepare function."""

    weight_index: int
    src: Tensor
    buf: Buffer
    emit: Callable  # emit(fn: Fn, src_ptr, dst_ptr)


class KernelBuilder:
    """The facade op lowerings call (see the module docstring); one per compiled model."""

    def __init__(self, module: ir.Module, target: TargetInfo, free_dims: list[str]):
        self.module = module
        self.target = target
        self.free_dims = list(free_dims)
        self.vw = target.vw
        self.launches: list[Launch] = []
        self.buffers: list[Buffer] = []
        self.packs: list[Pack] = []
        self._pack_cache: dict[tuple, Buffer] = {}
        self.weight_index: dict[str, int] = {}
        self.thread_scratch_nbytes = 0
        self.op_index = -1
        # the first op of the batch's tail (batch_split.batch_tail), which runs over the whole batch; -1: none
        self.tail_op = -1
        self.tail_gains = False  # a kernel of the tail chose otherwise for the batch than for one sample
        self.op_label = ""
        self.op_error: str | None = None
        self.op_temps: list[Tensor] = []
        # outputs of the op being lowered that no op reads and the graph does not return: a lowering
        # may leave them unwritten (a gradient op skips the gradients nobody asked for)
        self.op_unread: frozenset[int] = frozenset()
        self.graph = None  # the graph being lowered and its op being lowered (set by codegen)
        self.op = None
        # what a forward op's lowering keeps for its gradient op's lowering, keyed by what both read
        self.saved_for_grad: dict[tuple, dict] = {}
        self.pack_sources: dict[int, tuple] = {}
        # bf16 builds: buffers of float32 values that their producer wrote as bf16 (the first half, i16
        # elements) because every reader converts them to bf16 first (:func:`.kernels.gemm_bf16.bf16_input`
        # returns these views); ``bf16_result`` tells the op being lowered to write its result so
        self.bf16_held: dict[int, Tensor] = {}
        self.bf16_result = False
        # a pooling the op being lowered may do on its result (:mod:`.pool_fusion`): (the result, a
        # :class:`.kernels.pool_fused.StripPool`), set by codegen; a kernel that can pool takes it (take_pool)
        self.pool_request: tuple[Tensor, object] | None = None
        self.pool_taken = False
        self._names: dict[str, int] = {}
        self._kernel_cache: dict[tuple, ir.Function] = {}

    # ------------------------------------------------------------ bookkeeping

    def in_tail(self) -> bool:
        """Whether the op being lowered is in the batch's tail (``tail_op``), which runs over the whole batch."""
        return self.op_index >= self.tail_op >= 0

    def unique(self, name: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return f"k_{base}_{n}"

    def new_buffer(self, kind: str, **kw) -> Buffer:
        buf = Buffer(kind, len(self.buffers), **kw)
        self.buffers.append(buf)
        return buf

    def buffer_of(self, t: Tensor) -> Buffer:
        if t.buf is None:
            t.buf = self.new_buffer("scratch", type=t.type, name=t.value or "")
        return t.buf

    def take_pool(self, out: Tensor, accept: Callable | None = None):
        """The pooling requested of ``out`` (a :class:`.kernels.pool_fused.StripPool`), now taken: the caller
        writes the pooled result instead of ``out``, and codegen skips the pooling op. None where none is
        requested of ``out``, it is taken already, or ``accept(pooling)`` is false."""
        request = self.pool_request
        if request is None or request[0] is not out or self.pool_taken or (accept and not accept(request[1])):
            return None
        self.pool_taken = True
        return request[1]

    def kernel(self, name: str) -> Kernel:
        """A new task function; call :meth:`launch` with it once written."""
        return Kernel(self, name)

    def fail_message(self, message: str) -> None:
        """The current op's error message when a kernel fails; ``%lld`` stands for the detail value."""
        self.op_error = self.op_label.replace("%", "%%") + ": " + message

    def launch(self, k: Kernel, n, cost: int = 1) -> None:
        """Run kernel ``k`` over items ``[0, n)`` in the current op (split across threads)."""
        fn = k.finish()
        self.launches.append(Launch(fn, n, max(1, int(cost)), self.op_index, list(k.arg_tensors)))

    # ------------------------------------------------------------ tensors
    def view(self, t: Tensor, shape: Sequence, offset=0) -> Tensor:
        """``t``'s buffer seen with another (contiguous) shape, from element ``offset`` on; a tensor of
        strided rows keeps its rows (the last axis stays)."""
        self.buffer_of(t)
        shape = tuple(shape)
        if t.row_stride is not None:
            if offset != 0 or not shape or shape[-1] != t.shape[-1]:
                raise NativeLoweringError(f"a view {shape} of a tensor of strided rows {t.shape}")
            return Tensor(None, TensorType(t.dtype, shape), t.buf, t.offset, row_stride=t.row_stride)
        const = None
        if t.constant is not None and offset == 0 and all(isinstance(d, int) for d in shape) \
                and int(np.prod(shape, dtype=np.int64)) == t.constant.size:
            const = t.constant.reshape(shape)
        return Tensor(None, TensorType(t.dtype, shape), t.buf, _dims.add(t.offset, offset), const)

    def written_through(self, out: Tensor, emit: Callable[[Tensor], None]) -> None:
        """``emit(out)``, or where ``out`` has strided rows (a concatenation's part written in place) and
        the kernels ``emit`` lowers to cannot write them, ``emit`` into a temporary copied into it."""
        if out.row_stride is None:
            emit(out)
            return
        tmp = self.temp(out.shape, out.dtype)
        emit(tmp)
        self.copy(out, tmp)

    def temp(self, shape: Sequence, dtype: str = "float32") -> Tensor:
        """A fresh scratch tensor, private to the current op's kernels."""
        t = Tensor(None, TensorType(dtype, tuple(shape)))
        self.buffer_of(t)
        self.op_temps.append(t)
        return t

    def alias(self, out: Tensor, x: Tensor) -> None:
        """Make ``out`` the data of ``x`` reinterpreted (reshape, squeeze...): no copy unless
        ``out`` must live in its own buffer (a graph output).

        Where the element counts are expressions over free dims that may differ at run time (a
        reshape to ``(a, 7)`` of a ``(3, 7)`` tensor), the op first checks that they agree."""
        from graphc.backends.llvm.kernels.checks import emit_dim_checks
        from graphc.ops.common import fmt_shape

        n_in, n_out = _dims.product(x.shape), _dims.product(out.shape)
        emit_dim_checks(self, [(n_out, (n_in,))],
                        f"cannot reshape {fmt_shape(x.shape)} ({n_in} elements) to {fmt_shape(out.shape)} "
                        f"({n_out} = %lld elements at these input sizes)")
        if out.buf is not None and out.buf.kind == "output":
            self.copy(out, self.view(x, out.shape))
            return
        self.buffer_of(x)
        out.buf = x.buf
        out.offset = x.offset

    def packed_weight(self, w: Tensor, key: tuple, nbytes: int, emit: Callable) -> Tensor:
        """A per-instance prepacked copy of constant ``w`` (``emit(fn, src_ptr, dst_ptr)`` writes it)."""
        if w.constant is None or w.buf is None or w.buf.kind != "weight":
            raise NativeLoweringError("only weights can be prepacked")
        cache_key = (w.buf.slot, w.offset, key)
        buf = self._pack_cache.get(cache_key)
        if buf is None:
            buf = self.new_buffer("packed", nbytes=int(nbytes), name=f"{w.buf.name}/packed")
            self._pack_cache[cache_key] = buf
            self.packs.append(Pack(self.weight_index[w.buf.name], w, buf, emit))
        self.pack_sources[id(buf)] = (w, key, int(nbytes), emit)
        return Tensor(None, TensorType("float32", (int(nbytes) // 4,)), buf)

    def math(self, b: ir.IRBuilder) -> VMath:
        return VMath(b)

    # ------------------------------------------------------------ high-level kernels
    def map(self, out: Tensor, inputs: Sequence[Tensor], fn: Callable, *, name: str = "map",
            cost: int = 1) -> None:
        """``out = fn(m, *inputs)`` elementwise, with NumPy broadcasting of the inputs."""
        from graphc.backends.llvm.kernels.elementwise import emit_map

        emit_map(self, out, list(inputs), fn, name=name, cost=cost)

    def fill(self, out: Tensor, value: float) -> None:
        """Every element of ``out`` set to ``value``."""
        from graphc.backends.llvm.kernels.elementwise import emit_fill

        emit_fill(self, out, value)

    def store_dim(self, out: Tensor, d) -> None:
        """``out`` (one element) = dimension ``d``'s value at run time, in ``out``'s dtype."""
        from graphc.backends.llvm.kernels.elementwise import emit_store_dim

        emit_store_dim(self, out, d)

    def one_hot(self, out: Tensor, ids: Tensor, depth: int) -> None:
        from graphc.backends.llvm.kernels.movement import emit_one_hot

        emit_one_hot(self, out, ids, depth)

    def scatter_add_rows(self, out: Tensor, ids: Tensor, values: Tensor) -> None:
        """``out = 0; out[ids[i]] += values[i]`` (rows of ``out`` along axis 0)."""
        from graphc.backends.llvm.kernels.movement import emit_scatter_add_rows

        emit_scatter_add_rows(self, out, ids, values)

    def strided_copy(self, dst: Tensor, dst_strides: Sequence, dst_offset, src: Tensor, src_strides: Sequence,
                     src_offset, shape: Sequence) -> None:
        """``dst[offset + idx . strides] = src[offset + idx . strides]`` over index space ``shape``."""
        from graphc.backends.llvm.kernels.movement import strided_copy

        strided_copy(self, dst, dst_strides, dst_offset, src, src_strides, src_offset, shape)

    def copy(self, out: Tensor, x: Tensor) -> None:
        """``out = x`` (same number of elements; shapes may differ, but not where ``out``'s rows are
        strided)."""
        from graphc.backends.llvm.kernels.movement import emit_copy

        emit_copy(self, out, x)

    def transpose(self, out: Tensor, x: Tensor, perm: Sequence[int]) -> None:
        from graphc.backends.llvm.kernels.movement import emit_transpose

        emit_transpose(self, out, x, tuple(perm))

    def concat(self, out: Tensor, xs: Sequence[Tensor], axis: int) -> None:
        from graphc.backends.llvm.kernels.movement import emit_concat

        emit_concat(self, out, list(xs), axis)

    def slice(self, out: Tensor, x: Tensor, axis: int, start: int, step: int) -> None:
        from graphc.backends.llvm.kernels.movement import emit_slice

        emit_slice(self, out, x, axis, start, step)

    def slice_scatter(self, out: Tensor, values: Tensor, axis: int, start: int, step: int) -> None:
        """``out = 0; out[start::step along axis] = values``."""
        from graphc.backends.llvm.kernels.movement import emit_slice_scatter

        emit_slice_scatter(self, out, values, axis, start, step)

    def gather(self, out: Tensor, table: Tensor, ids: Tensor) -> None:
        from graphc.backends.llvm.kernels.movement import emit_gather

        emit_gather(self, out, table, ids)

    def matmul(self, a: Tensor, b: Tensor, out: Tensor, *, bias: Tensor | None = None,
               activation: Callable | None = None, residual: Tensor | None = None,
               post_activation: Callable | None = None) -> None:
        """``out = post_activation(activation(a @ b + bias) + residual)``.

        ``b`` is 2-D (a weight: packed once, the epilogue applied while the tile is in
        registers) or batched like ``a``; activations are formulas ``f(m, v)`` over VMath.
        """
        from graphc.backends.llvm.kernels.gemm import emit_matmul

        bias, residual = self._epilogue_operands(out, bias, residual)

        def emit(o: Tensor) -> None:
            emit_matmul(self, a, b, o, bias=bias, activation=activation, residual=residual,
                        post_activation=post_activation)

        # products by a weight on the float32 GEMM write strided rows themselves
        by_weight = b.rank == 2 and b.is_constant and b.buf is not None and b.buf.kind == "weight"
        if by_weight and self.target.precision == "float32":
            emit(out)
        else:
            self.written_through(out, emit)

    def conv(self, x: Tensor, w: Tensor, out: Tensor, *, strides: Sequence[int], dilations: Sequence[int],
             pads: Sequence, groups: int = 1, bias: Tensor | None = None, activation: Callable | None = None,
             residual: Tensor | None = None, post_activation: Callable | None = None) -> None:
        """Channels-last N-d convolution (kernel (*k, C/groups, O)) with the matmul's epilogue."""
        from graphc.backends.llvm.kernels.conv import emit_conv

        bias, residual = self._epilogue_operands(out, bias, residual)
        emit_conv(self, x, w, out, strides=strides, dilations=dilations, pads=pads, groups=groups, bias=bias,
                  activation=activation, residual=residual, post_activation=post_activation)

    def separable_conv(self, x: Tensor, dw: Tensor, pw: Tensor, out: Tensor, *, strides: Sequence[int],
                       dilations: Sequence[int], pads: Sequence, groups: int, bias: Tensor | None = None,
                       activation: Callable | None = None, residual: Tensor | None = None,
                       post_activation: Callable | None = None) -> None:
        """Depthwise conv then ``@ pw``, without materializing the depthwise result."""
        from graphc.backends.llvm.kernels.conv import emit_separable

        bias, residual = self._epilogue_operands(out, bias, residual)
        self.written_through(out, lambda o: emit_separable(
            self, x, dw, pw, o, strides=strides, dilations=dilations, pads=pads, groups=groups, bias=bias,
            activation=activation, residual=residual, post_activation=post_activation))

    def qlinear_matmul(self, x: Tensor, w: Tensor, out: Tensor, **requant) -> None:
        """int8 ``out = requantize(x @ w + bias)`` (:mod:`graphc.ops.qlinear`) on the target's dot product."""
        from graphc.backends.llvm.kernels.gemm_int8 import Requant, emit_qlinear_matmul

        emit_qlinear_matmul(self, x, w, out, Requant(**requant))

    def qlinear_conv(self, x: Tensor, w: Tensor, out: Tensor, *, strides: Sequence[int], dilations: Sequence[int],
                     pads: Sequence, groups: int = 1, **requant) -> None:
        """int8 channels-last convolution with the requantizing epilogue of :meth:`qlinear_matmul`."""
        from graphc.backends.llvm.kernels.gemm_int8 import Requant, emit_qlinear_conv

        emit_qlinear_conv(self, x, w, out, Requant(**requant), strides=strides, dilations=dilations, pads=pads,
                          groups=groups)

    def _epilogue_operands(self, out: Tensor, bias: Tensor | None,
                           residual: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """``bias`` and ``residual`` as the product kernels read them: a bias of the output's
        channels, a residual of the output's shape. Shape rules accept operands that only
        broadcast to those (a free dim that may be 1 at run time); such an operand is broadcast
        into a temporary first, with the map's run-time checks."""
        from graphc.backends.llvm.kernels.layout import same

        if bias is not None and not same(bias.shape[0], out.shape[-1]):
            full = self.temp(out.shape[-1:], bias.dtype)
            self.map(full, [bias], lambda m, v: v, name="broadcast_bias")
            bias = full
        if residual is not None and (residual.rank != out.rank
                                     or not all(same(r, o) for r, o in zip(residual.shape, out.shape))):
            full = self.temp(out.shape, residual.dtype)
            self.map(full, [residual], lambda m, v: v, name="broadcast_residual")
            residual = full
        return bias, residual

    def pool(self, x: Tensor, out: Tensor, *, kind: str, kernel: Sequence[int], strides: Sequence[int],
             pads: Sequence) -> None:
        """Max or average pooling over the spatial axes (kind "max" or "avg")."""
        from graphc.backends.llvm.kernels.conv import emit_pool

        emit_pool(self, x, out, kind=kind, kernel=kernel, strides=strides, pads=pads)

    def recurrence(self, kind: str, x: Tensor, kernel: Tensor, recurrent_kernel: Tensor, bias: Tensor,
                   states: Sequence[Tensor], outs: tuple, *, activation: Callable, recurrent_activation: Callable,
                   go_backwards: bool, return_sequences: bool, reset_after: bool = True) -> None:
        """A whole LSTM / GRU / SimpleRNN sequence loop (kind "lstm", "gru", "simple_rnn")."""
        from graphc.backends.llvm.kernels.recurrent import emit_rnn

        emit_rnn(self, kind, x, kernel, recurrent_kernel, bias, list(states), tuple(outs), activation=activation,
                 recurrent_activation=recurrent_activation, go_backwards=go_backwards,
                 return_sequences=return_sequences, reset_after=reset_after)

    def conv_grad_input(self, dy: Tensor, w: Tensor, out: Tensor, *, strides, dilations, pads, groups: int) -> None:
        """The gradient of a convolution for its input (``out`` has the input's shape)."""
        from graphc.backends.llvm.kernels.conv_grad import emit_conv_grad_input

        emit_conv_grad_input(self, dy, w, out, strides=strides, dilations=dilations, pads=pads, groups=groups)

    def conv_grad_kernel(self, x: Tensor, dy: Tensor, out: Tensor, *, strides, dilations, pads,
                         groups: int) -> None:
        """The gradient of a convolution for its kernel (``out`` has the kernel's shape)."""
        from graphc.backends.llvm.kernels.conv_grad import emit_conv_grad_kernel

        emit_conv_grad_kernel(self, x, dy, out, strides=strides, dilations=dilations, pads=pads, groups=groups)

    def pool_grad(self, x: Tensor, dy: Tensor, out: Tensor, *, kind: str, kernel, strides, pads) -> None:
        """The gradient of max or average pooling for its input."""
        from graphc.backends.llvm.kernels.conv_grad import emit_pool_grad

        emit_pool_grad(self, x, dy, out, kind=kind, kernel=kernel, strides=strides, pads=pads)

    def reduce(self, out: Tensor, x: Tensor, axes: Sequence[int], kind: str) -> None:
        """Reduce ``x`` over ``axes`` (kind: sum, mean, max, min, sumsq, meansq) into ``out``."""
        from graphc.backends.llvm.kernels.reduce import emit_reduce

        emit_reduce(self, out, x, tuple(sorted(a % x.rank for a in axes)), kind)

    def sum_to(self, out: Tensor, x: Tensor) -> None:
        """``x`` summed to ``out``'s shape (broadcasting's adjoint); a free dim of ``out`` that
        ``x`` may have been broadcast along is summed exactly when it is 1 at run time."""
        from graphc.backends.llvm.kernels.reduce import emit_sum_to

        emit_sum_to(self, out, x)

    def softmax(self, out: Tensor, x: Tensor, axis: int, *, log: bool = False) -> None:
        from graphc.backends.llvm.kernels.reduce import emit_softmax

        emit_softmax(self, out, x, axis % x.rank, log=log)

    def argmax(self, out: Tensor, x: Tensor, axis: int) -> None:
        from graphc.backends.llvm.kernels.reduce import emit_argmax

        emit_argmax(self, out, x, axis % x.rank)

    def cross_replica_sum(self, t: Tensor, *, weighted: bool = False) -> None:
        """``t`` summed in place across data-parallel replicas through the instance's collective hook
        (share-weighted with ``weighted``; graphc.ops.collective)."""
        from graphc.backends.llvm.kernels.collective import emit_cross_replica_sum

        emit_cross_replica_sum(self, t, weighted)


def ir_dtype(dtype: str) -> ir.Type:
    return DTYPE_IR[dtype]
