"""Run-time checks of sizes that code generation cannot prove.

Free dims are bound only when a model runs, so an op whose output size is an expression over
them (a reshape to ``(a, 7)``, a gradient summed to ``(a, 7)``) may meet input sizes at which
that expression is wrong. The reference interpreter's NumPy raises there; native kernels would
read or write the wrong number of elements instead. A check is one launch of one work item that
fails the op, with the op's error message, unless every dimension it tests equals one of its
allowed values at the bound sizes; checks that hold for every binding emit nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.backends.llvm.builder import KernelBuilder
from graphc.backends.llvm.kernels.layout import same
from graphc.ir.dims import Dim


def emit_dim_checks(kb: KernelBuilder, checks: Sequence[tuple[Dim, Sequence[Dim]]], message: str) -> None:
    """Fail the current op unless each ``(dim, allowed)`` has ``dim`` equal to one of ``allowed``.

    ``message`` is the op's error message (``%lld`` stands for the failing dim's value); it is
    kept when an earlier kernel of the op has set one.
    """
    pending = [(d, tuple(allowed)) for d, allowed in checks if not any(same(d, a) for a in allowed)]
    if not pending:
        return
    if kb.op_error is None:
        kb.fail_message(message)
    k = kb.kernel("check_dims")
    b = k.b
    for d, allowed in pending:
        value = k.dim(d)
        ok = None
        for a in allowed:
            eq = b.icmp_signed("==", value, k.dim(a))
            ok = eq if ok is None else b.or_(ok, eq)
        with b.if_then(b.not_(ok), likely=False):
            k.fail(value)
    kb.launch(k, 1, 1)
