"""What a recurrence's forward kernel keeps for its backward kernel in a training step.

The backward kernel of an LSTM, GRU or SimpleRNN needs every step's pre-activations and the
state each step started from. On its own it recomputes them: the input projection (a GEMM as
large as the forward's) and the whole forward recurrence. In a graph where the forward op and
its gradient op (``lstm_grad``...) both appear — a training step — the forward kernel writes
them as it goes instead, into tensors whose lifetime then runs to the gradient op (the memory
plan follows the kernels that touch a buffer), and the gradient op reads them.

The two ops are paired by what they read: the gradient op's leading inputs are the forward
op's inputs (sequence, kernels, bias, initial states, mask) and its attributes are the forward
op's (see ``_rnn_vjp`` in :mod:`graphc.ops.recurrent`). Values are immutable while live — the
sequence's buffer lives until the gradient op reads it, and a weight's in-place update runs
after every reader of the old value — so the kept tensors are exactly what a recomputation
would read them from. A forward op replayed from the code generator's memo keeps nothing; its
gradient op then recomputes (the same values, as before).
"""

from __future__ import annotations

from graphc.backends.llvm.builder import KernelBuilder


def _key(kind: str, inputs, attrs: dict) -> tuple:
    return kind, tuple(inputs), repr(sorted(attrs.items()))


def forward_has_grad(kb: KernelBuilder) -> bool:
    """Whether the op being lowered (a recurrence) has its gradient op in the graph."""
    op, graph = kb.op, kb.graph
    if op is None or graph is None or not op.inputs:
        return False
    n = len(op.inputs)
    for user, _ in graph.consumers(op.inputs[0]):
        if user.type == f"{op.type}_grad" and tuple(user.inputs[:n]) == tuple(op.inputs) and user.attrs == op.attrs:
            return True
    return False


def keep_for_grad(kb: KernelBuilder, tensors: dict) -> None:
    """Record ``tensors`` (name -> Tensor, written by the forward op being lowered) for its gradient op."""
    op = kb.op
    kb.saved_for_grad[_key(op.type, op.inputs, op.attrs)] = dict(tensors)


def kept_for_grad(kb: KernelBuilder, kind: str, n_cotangents: int) -> dict | None:
    """The tensors the forward op of the gradient op being lowered kept for it, or None."""
    op = kb.op
    if op is None:
        return None
    return kb.saved_for_grad.get(_key(kind, op.inputs[:len(op.inputs) - n_cotangents], op.attrs))


__all__ = ["forward_has_grad", "keep_for_grad", "kept_for_grad"]
