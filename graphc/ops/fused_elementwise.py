"""``fused_elementwise``: a connected group of elementwise ops run as one op over one iteration shape.

The optimizer (``graphc.passes.fuse_elementwise``) introduces it; the front end never does. The op
carries a small expression program: the group's ops, in order, each reading the fused op's inputs
or earlier steps::

    env = [input 0, ..., input n-1]
    for (op_type, refs, attrs) in program:          # refs index env
        env.append(op_type(*[env[r] for r in refs], **dict(attrs)))
    outputs = [env[r] for r in outputs]

Each step is one of the elementwise ops of :data:`FUSIBLE_OPS`, computed by that op's own facets
(its shape rule, its NumPy reference, its ONNX mapping, its native vector body), so the fused op
cannot disagree with the ops it replaces. Every output has the iteration shape (the broadcast of all
inputs); inputs may broadcast to it. Since each step commutes with broadcasting, a backend may
evaluate every step at every element of the iteration shape (one loop, one kernel).

It has no gradient of its own (``not_differentiable``): it exists only in graphs the optimizer has
rewritten, after autodiff has run, as the backward kernels do.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np

from graphc.ir.types import TensorType
from graphc.ops.common import broadcast_shapes
from graphc.ops.elementwise import BINARY, UNARY
from graphc.ops.registry import OpDef, ShapeError, get, register

__all__ = ["FUSIBLE_OPS", "step_types", "evaluate_program", "capture_bodies"]

# Ops a program may hold: elementwise, pure (no random state), and lowered natively as one map.
FUSIBLE_OPS = frozenset(UNARY) | frozenset(BINARY) | frozenset({
    "add_n", "cast", "clip", "unary_grad", "where", "greater", "greater_equal", "less", "equal", "broadcast_like"})

# A step: (op_type: str, refs: tuple[int, ...], attrs: tuple[tuple[str, value], ...]).
Step = tuple


def _check_program(n_inputs: int, program: Sequence[Step], outputs: Sequence[int]) -> None:
    if not program:
        raise ShapeError("fused_elementwise: the program is empty")
    for k, step in enumerate(program):
        if len(step) != 3:
            raise ShapeError(f"fused_elementwise: step {k} is {step!r}, not (op, refs, attrs)")
        op_type, refs, _ = step
        if op_type not in FUSIBLE_OPS:
            raise ShapeError(f"fused_elementwise: step {k} is op {op_type!r}, which cannot be fused")
        if any(not 0 <= r < n_inputs + k for r in refs):
            raise ShapeError(f"fused_elementwise: step {k} ({op_type}) reads {tuple(refs)}, but only values "
                             f"0..{n_inputs + k - 1} exist before it")
    if not outputs or any(not n_inputs <= r < n_inputs + len(program) for r in outputs):
        raise ShapeError(f"fused_elementwise: outputs {tuple(outputs)} must name steps "
                         f"({n_inputs}..{n_inputs + len(program) - 1})")


def step_types(types: Sequence[TensorType], program: Sequence[Step]) -> list[TensorType]:
    """The types of the inputs then of every step's result (each step's own shape rule)."""
    env = list(types)
    for op_type, refs, attrs in program:
        opdef = get(op_type)
        try:
            out = opdef.infer_types([env[r] for r in refs], opdef.resolve_attrs(dict(attrs)))
        except (ShapeError, ValueError) as exc:
            raise ShapeError(f"fused_elementwise: step {op_type}: {exc}") from None
        env.append(out[0])
    return env


def _infer(types, *, program, outputs):
    _check_program(len(types), program, outputs)
    env = step_types(types, program)
    shape = broadcast_shapes(*[t.shape for t in types])
    outs = [env[r] for r in outputs]
    for r, t in zip(outputs, outs):
        if t.shape != shape:
            raise ShapeError(f"fused_elementwise: output step {r - len(types)} has shape {t.shape}, not the "
                             f"iteration shape {shape}")
    return outs


def evaluate_program(arrays: Sequence[np.ndarray], program: Sequence[Step], outputs: Sequence[int]) -> list:
    """Run the program with each step's NumPy reference; the output arrays."""
    env = list(arrays)
    for op_type, refs, attrs in program:
        opdef = get(op_type)
        env.append(np.asarray(opdef.reference(*[env[r] for r in refs], **opdef.resolve_attrs(dict(attrs)))))
    return [env[r] for r in outputs]


def _reference(*arrays, program, outputs):
    outs = evaluate_program(arrays, program, outputs)
    return outs[0] if len(outs) == 1 else tuple(outs)


register(OpDef("fused_elementwise", _infer, _reference, attrs={"program": (), "outputs": ()},
               fusion_kind="elementwise", not_differentiable=True,
               doc="A group of elementwise ops (an expression program) in one loop; one or more outputs."))


# ---------------------------------------------------------------------------- ONNX
def _to_onnx(ctx, op):
    """Each step through its op's own mapping, on a context that knows the intermediate types."""
    from graphc.backends.onnx.context import EmitContext
    from graphc.ir.graph import Op

    program, outputs = ctx.attrs["program"], ctx.attrs["outputs"]
    n = ctx.num_inputs
    types = step_types([ctx.input_type(i) for i in range(n)], program)
    names = list(op.inputs) + [None] * len(program)
    for r, out in zip(outputs, op.outputs):
        names[r] = names[r] or out
    for k, (op_type, refs, attrs) in enumerate(program):
        slot = n + k
        names[slot] = names[slot] or ctx._em.fresh(f"{op.id}/{op_type}")
        sub = Op(f"{op.id}/{k}", op_type, [names[r] for r in refs], [names[slot]], dict(attrs), op.layer)
        sub_types = {names[r]: types[r] for r in refs} | {names[slot]: types[slot]}
        sub_ctx = EmitContext(ctx._em, sub)
        sub_ctx.input_type = lambda i, s=sub, t=sub_types: t[s.inputs[i]]
        sub_ctx.output_type = lambda i=0, s=sub, t=sub_types: t[s.outputs[i]]
        sub_ctx.constant_input = lambda i, s=sub, c=ctx: (c.constant_input(list(op.inputs).index(s.inputs[i]))
                                                          if s.inputs[i] in op.inputs else None)
        get(op_type).to_onnx(sub_ctx, sub)
    for r, out in zip(outputs, op.outputs):  # an output computed twice (listed twice) is copied
        if names[r] != out:
            ctx.node("Identity", [names[r]], out)


get("fused_elementwise").to_onnx = _to_onnx


# ---------------------------------------------------------------------------- native
def capture_bodies(types: Sequence[TensorType], program: Sequence[Step]) -> list[tuple]:
    """Each step's vector body as its op's native ``lower`` facet defines it: ``(fn, refs)`` where
    ``fn(m, *values)`` computes the step from the values ``refs`` name (a facet may read fewer operands
    than the op has, as ``unary_grad`` of ``linear`` does)."""
    env_types = step_types(types, program)
    placeholders = [SimpleNamespace(type=t, shape=t.shape, dtype=t.dtype, rank=t.rank, value=f"%{i}",
                                    constant=None, is_constant=False) for i, t in enumerate(env_types)]
    bodies = []
    for k, (op_type, refs, attrs) in enumerate(program):
        capture = _Capture(op_type)
        fake_op = SimpleNamespace(type=op_type, id=op_type, attrs=dict(attrs), inputs=list(refs), layer=None)
        opdef = get(op_type)
        out = placeholders[len(types) + k]
        opdef.lower(capture, fake_op, *[placeholders[r] for r in refs], out=out,
                    **opdef.resolve_attrs(dict(attrs)))
        if capture.fn is None:
            raise ShapeError(f"fused_elementwise: the native lowering of {op_type!r} is not one elementwise map")
        read = []
        for t in capture.inputs:
            index = next((i for i, p in enumerate(placeholders) if p is t), None)
            if index is None:
                raise ShapeError(f"fused_elementwise: the native lowering of {op_type!r} reads a derived tensor")
            read.append(index)
        bodies.append((capture.fn, tuple(read), env_types[len(types) + k].dtype))
    return bodies


class _Capture:
    """A stand-in kernel builder that records the one ``map`` an elementwise op's lowering asks for."""

    def __init__(self, op_type: str):
        self.op_type = op_type
        self.fn = None
        self.inputs: list = []

    def map(self, out, inputs, fn, *, name: str = "map", cost: int = 1) -> None:
        if self.fn is not None:
            raise ShapeError(f"fused_elementwise: the native lowering of {self.op_type!r} maps twice")
        self.fn, self.inputs = fn, list(inputs)

    def alias(self, out, x) -> None:
        self.map(out, [x], lambda m, v: v)

    def __getattr__(self, name: str):
        raise ShapeError(f"fused_elementwise: the native lowering of {self.op_type!r} uses kb.{name}, "
                         "which a fused loop cannot hold")


def _lower(kb, op, *ins, out, program, outputs):
    from graphc.backends.llvm.kernels.fused_elementwise import emit_fused_elementwise

    outs = list(out) if isinstance(out, tuple) else [out]
    emit_fused_elementwise(kb, outs, list(ins), capture_bodies([t.type for t in ins], program), outputs)


get("fused_elementwise").lower = _lower
