"""The replica context: how an op that sums over data-parallel replicas reaches the other processes.

The ``cross_replica_sum`` op (:mod:`graphc.ops.collective`) computes, on every replica, the sum of its
input over all replicas. What "all replicas" means is not a property of the graph but of where it runs:
while a :func:`replica_context` is active in the calling thread, the op hands its value to that context's
``all_reduce_sum`` (summing an array across processes in place, e.g.
:meth:`graphc.distribute.DataParallel.all_reduce_sum`); without one the process is its own single replica
and the op is the identity. The reference interpreter reads the context directly; native code reaches it
through the instance's collective hook (``gc_instance_set_collective``), which :func:`attach` points at
one ctypes callback of this module. The generated code calls the hook on the thread that runs the step
(a launch of one item), so the callback sees the context of the thread that called into the library.

Each replica's share of the global loss weights its cotangents: in data-parallel training every replica
differentiates its own loss (the mean over its samples) and the gradients are then summed, each scaled by
the replica's share ``n_replica / N`` of the global batch. A value summed across replicas in the forward
pass receives, in the backward pass, the sum of the replicas' cotangents weighted by those shares and
expressed in this replica's units (divided by its own share): ``weighted=True``. With equal shares that is
the plain sum; with unequal ones (the last, smaller global batch of an epoch) it keeps the summed gradient
equal to the gradient of the global batch's loss.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

__all__ = ["ReplicaContext", "replica_context", "current", "cross_replica_sum", "attach"]


@dataclass
class ReplicaContext:
    """The replicas a ``cross_replica_sum`` sums over, seen from one of them.

    ``all_reduce_sum(array)``: sums a writable C-contiguous array across the replicas in place (every
    replica calls it with an array of the same shape, in the same order); ``share``: this replica's share
    of the global loss (its samples over the global batch's); ``error``: the first exception a native
    call's hook caught (re-raised when the context exits through the native error it caused)."""

    all_reduce_sum: Callable[[np.ndarray], None]
    share: float = 1.0
    error: BaseException | None = None

    def reduce(self, array: np.ndarray, weighted: bool) -> None:
        """``array`` summed across the replicas in place (share-weighted and in this replica's units when
        ``weighted``)."""
        if array.size == 0:
            return
        if weighted:
            array *= array.dtype.type(self.share)
        self.all_reduce_sum(array)
        if weighted:
            array /= array.dtype.type(self.share)


_CURRENT: ContextVar[ReplicaContext | None] = ContextVar("graphc_replica_context", default=None)


def current() -> ReplicaContext | None:
    """The replica context active in this thread, or None (a single replica)."""
    return _CURRENT.get()


@contextmanager
def replica_context(all_reduce_sum: Callable[[np.ndarray], None], share: float = 1.0) -> Iterator[ReplicaContext]:
    """Run the enclosed steps as one replica of several: ``cross_replica_sum`` ops sum through
    ``all_reduce_sum``, and weight cotangents by ``share`` (see the module's docstring). An error the
    collective raised inside native code comes out as itself (the native call's error is its cause)."""
    if not share > 0:
        raise ValueError(f"replica_context(share={share!r}): a replica's share of the global loss must be positive")
    ctx = ReplicaContext(all_reduce_sum, float(share))
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    except Exception as exc:
        if ctx.error is not None and exc is not ctx.error:
            raise ctx.error from exc
        raise
    finally:
        _CURRENT.reset(token)


def cross_replica_sum(array: np.ndarray, weighted: bool = False) -> np.ndarray:
    """The reference of the ``cross_replica_sum`` op: a new array holding ``array`` summed over the
    replicas of the current context (a copy of it without one)."""
    out = np.array(array, copy=True, order="C")
    ctx = current()
    if ctx is not None:
        ctx.reduce(out, weighted)
    return out


# ---------------------------------------------------------------------------- native code
# gc_collective_fn (graphc.h): int32_t (*)(void* user, void* data, int64_t count, gc_dtype_t dtype, int32_t kind)
_HOOK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32,
                              ctypes.c_int32)
_DTYPES = {1: np.dtype(np.float32), 2: np.dtype(np.float64)}  # GC_FLOAT32, GC_FLOAT64
_KINDS = {0: False, 1: True}  # GC_COLLECTIVE_SUM, GC_COLLECTIVE_SHARE_WEIGHTED_SUM


def _native_hook(user, data, count, dtype, kind) -> int:
    """What the generated code calls between kernels: 0 when done, 1 when the collective failed."""
    ctx = current()
    if ctx is None:
        return 0
    try:
        if dtype not in _DTYPES or kind not in _KINDS:
            raise ValueError(f"the collective hook got dtype code {dtype} and kind {kind}; it sums float32 and "
                             "float64 buffers, plainly (kind 0) or share-weighted (kind 1)")
        item = _DTYPES[dtype]
        if count > 0:
            raw = (ctypes.c_char * (int(count) * item.itemsize)).from_address(data)
            ctx.reduce(np.frombuffer(raw, dtype=item), _KINDS[kind])
        return 0
    except BaseException as exc:  # nothing may unwind through C: the error is kept for replica_context
        if ctx.error is None:
            ctx.error = exc
        return 1


_HOOK = _HOOK_TYPE(_native_hook)


def attach(instance) -> None:
    """Point a native instance's collective hook (``gc_instance_set_collective``) at the replica context
    of the calling thread, so its ``cross_replica_sum`` ops sum across replicas while one is active."""
    library = instance.library
    set_collective = library.lib.gc_instance_set_collective
    set_collective.restype = ctypes.c_void_p
    set_collective.argtypes = [ctypes.c_void_p, _HOOK_TYPE, ctypes.c_void_p]
    instance._require_open()
    library.check(set_collective(instance._handle, _HOOK, None), "gc_instance_set_collective")
