"""One loop for a ``fused_elementwise`` op: every step of its program per element, all outputs stored.

The loop is :func:`~.elementwise.emit_maps` (the iteration shape reduced by ``merge_axes``, work items
of one inner row or of ``BLOCK`` elements, a vector loop of ``vw`` lanes with operands broadcast
along the inner axis splatted, a scalar remainder), with several outputs of the iteration shape. The
body of each step is the one its op's own ``lower`` facet hands to ``kb.map``
(:func:`graphc.ops.fused_elementwise.capture_bodies`), called on vectors and then on scalars, so the
math is written once. Intermediate values stay in registers; a comparison's i1 result is widened
to the i8 a bool tensor holds, exactly as if it had been stored and loaded again.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.backends.llvm.builder import KernelBuilder, Tensor
from graphc.backends.llvm.kernels.elementwise import emit_maps


def emit_fused_elementwise(kb: KernelBuilder, outs: list[Tensor], inputs: list[Tensor], bodies: Sequence[tuple],
                           outputs: Sequence[int]) -> None:
    """``outs[j] = env[outputs[j]]`` where ``env`` is ``inputs`` then each body's result, in order.

    ``bodies``: ``(fn, refs, dtype)`` per step, ``fn(m, *[env[r] for r in refs])`` its value.
    """
    emit_maps(kb, outs, inputs, bodies, outputs, name="fused_elementwise", cost=max(1, len(bodies)))
