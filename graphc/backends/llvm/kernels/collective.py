"""The cross-replica sum's call into the runtime: one launch of one item, between kernels.

The kernel passes the tensor's address and element count to ``gc__collective_sum``
(graphc/c_runtime/src/instance.c), which calls the instance's collective hook
(``gc_instance_set_collective``) or, without one, leaves the tensor as it is (one replica). A launch of
one item runs on the thread that called into the library, never on a pool worker; a hook that fails
fails the op, with the hook's return value in the error message.
"""

from __future__ import annotations

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import I32, I64, PTR, i32
from graphc.ir import dims

GC_DTYPES = {"float32": 1, "float64": 2}
SUM, SHARE_WEIGHTED_SUM = 0, 1  # gc_collective_kind_t


def emit_cross_replica_sum(kb: KernelBuilder, t: Tensor, weighted: bool) -> None:
    """``t`` summed across the replicas in place (share-weighted when ``weighted``)."""
    from graphc.backends.llvm.irutil import intrinsic

    if t.dtype not in GC_DTYPES:
        raise NativeLoweringError(f"cross_replica_sum sums float32 or float64 tensors, not {t.dtype}")
    kb.fail_message("the cross-replica sum failed: the instance's collective hook returned %lld "
                    "(a peer replica died or its collective failed)")
    hook = intrinsic(kb.module, "gc__collective_sum", I32, [PTR, PTR, I64, I32, I32])
    k = kb.kernel("cross_replica_sum")
    b = k.b
    count = k.dim(dims.product(t.shape))
    kind = SHARE_WEIGHTED_SUM if weighted else SUM
    r = b.call(hook, [k.frame, k.ptr(t), count, i32(GC_DTYPES[t.dtype]), i32(kind)])
    with b.if_then(b.icmp_signed("!=", r, i32(0)), likely=False):
        k.fail(b.sext(r, I64))
    kb.launch(k, 1, 1)
