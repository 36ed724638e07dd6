"""Reverse-mode differentiation of an IR graph, one op's ``vjp`` facet at a time.

Algorithm: (1) mark the *active* values, those that depend (through float values) on a value
we differentiate with respect to; (2) walk the ops in reverse topological order, starting from
the loss with cotangent ``seed`` (1.0 for a scalar loss); for each active op that has a
cotangent on some output, call its ``vjp(ctx, *output_cotangents)``, which emits ops through
``ctx`` and returns one cotangent (or None) per input; (3) cotangents reaching the same value
from several uses are summed with ``add_n``. Only first-order gradients are supported: the
backward kernels (``conv_grad_input``...) are themselves ``not_differentiable``.

Not here: what a gradient *is* for an op. That lives beside the op, in its family module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from graphc.ir import dims
from graphc.ir.dims import Dim
from graphc.ir.graph import Graph, Op
from graphc.ir.types import TensorType, is_float
from graphc.ops.builder import OpBuilder
from graphc.ops.registry import get


class NotDifferentiableError(ValueError):
    """A gradient was needed through an op that has no ``vjp`` facet."""


class GradContext:
    """What an op's ``vjp`` facet works with: the op, its attributes, and op emitters.

    ``ctx.x`` / ``ctx.y`` are the op's input / output value names, ``ctx.attrs`` its resolved
    attributes, ``ctx.needs[i]`` whether input ``i`` needs a gradient at all. Ops are emitted
    with ``ctx.emit("mul", a, b)`` or ``ctx.mul(a, b)``; they record the forward op's layer.
    """

    def __init__(self, graph: Graph, op: Op, attrs: dict[str, Any], needs: list[bool],
                 scalars: dict[tuple, str]):
        self.graph = graph
        self.op = op
        self.attrs = attrs
        self.needs = needs
        self.x = list(op.inputs)
        self.y = list(op.outputs)
        self._b = OpBuilder(graph, layer=op.layer)
        self._scalars = scalars

    # ------------------------------------------------------------------ types
    def type(self, value: str) -> TensorType:
        return self.graph.type_of(value)

    def shape(self, value: str) -> tuple:
        return self.graph.type_of(value).shape

    def dtype(self, value: str) -> str:
        return self.graph.type_of(value).dtype

    def rank(self, value: str) -> int:
        return self.graph.type_of(value).rank

    # ------------------------------------------------------------------ emitting
    def emit(self, op_type: str, *inputs: str, **attrs: Any):
        return self._b.emit(op_type, *inputs, **attrs)

    def __getattr__(self, op_type: str):
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        get(op_type)

        def call(*inputs: str, **attrs: Any):
            return self._b.emit(op_type, *inputs, **attrs)

        return call

    def constant(self, array: np.ndarray, name: str = "grad_const") -> str:
        return self._b.constant(np.asarray(array), name)

    def scalar(self, value: float, dtype: str | None = None) -> str:
        """A shape-() constant (shared by every op of this differentiation)."""
        dtype = dtype or self.dtype(self.x[0])
        key = (float(value), dtype)
        if key not in self._scalars:
            name = self.graph.unique_name(f"grad/const_{dtype}")
            self.graph.add_constant(name, np.asarray(value, dtype=dtype))
            self._scalars[key] = name
        return self._scalars[key]

    # ------------------------------------------------------------------ helpers for vjps
    def zeros_like(self, value: str) -> str:
        return self.emit("broadcast_like", self.scalar(0.0, self.dtype(value)), value)

    def match(self, grad: str, like: str) -> str:
        """``grad`` with exactly ``like``'s shape spelling (a reshape when only symbols differ)."""
        if self.shape(grad) == self.shape(like):
            return grad
        return self.emit("reshape", grad, shape=self.shape(like))

    def unbroadcast(self, grad: str, like: str) -> str:
        """Sum ``grad`` over the axes along which ``like`` was broadcast to ``grad``'s shape.

        The axes are chosen here when every one is known; a free dim of ``like`` that is not
        known to be ``grad``'s (``a`` against 3 or ``max(a, b)``) was broadcast exactly when it
        is 1 at run time, so then ``sum_to`` decides when the model runs.
        """
        g_shape, l_shape = self.shape(grad), self.shape(like)
        if g_shape == l_shape:
            return grad
        lead = len(g_shape) - len(l_shape)
        if any(_broadcast_at_run_time(gd, ld) for gd, ld in zip(g_shape[max(lead, 0):], l_shape)):
            return self.emit("sum_to", grad, like)
        g = grad
        if lead > 0:
            g = self.emit("reduce_sum", g, axes=tuple(range(lead)), keepdims=False)
        axes = tuple(i for i, (gd, ld) in enumerate(zip(self.shape(g), l_shape)) if ld == 1 and gd != 1)
        if axes:
            g = self.emit("reduce_sum", g, axes=axes, keepdims=True)
        return self.match(g, like)

    def expand_reduced(self, grad: str, x: str, axes: Iterable[int], keepdims: bool) -> str:
        """A reduction's cotangent with the reduced axes of ``x`` back as size-1 axes."""
        if keepdims:
            return grad
        rank = self.rank(x)
        g = grad
        for a in sorted({a % rank for a in axes}):
            g = self.emit("expand_dims", g, axis=a)
        return g

    def count(self, x: str, axes: Iterable[int], dtype: str | None = None) -> str:
        """The number of elements of ``x`` along ``axes`` as a scalar (a constant when static)."""
        dtype = dtype or self.dtype(x)
        shape = self.shape(x)
        axes = sorted({a % len(shape) for a in axes}) if shape else []
        dims = [shape[a] for a in axes]
        if all(isinstance(d, int) for d in dims):
            return self.scalar(float(np.prod(dims, dtype=np.int64)), dtype)
        return self.emit("num_elements", x, axes=tuple(axes), dtype=dtype)

    def broadcast_to(self, value: str, like: str) -> str:
        if self.shape(value) == self.shape(like):
            return value
        return self.emit("broadcast_like", value, like)


def _broadcast_at_run_time(grad_dim: Dim, like_dim: Dim) -> bool:
    """Whether ``like_dim`` read over ``grad_dim`` is broadcast for some free-dim values only: it is
    free (so it may be 1), ``grad_dim`` is not 1 and the two are not known to be equal."""
    return isinstance(like_dim, str) and grad_dim != 1 and not dims.same(grad_dim, like_dim)


def _total(graph: Graph, parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    layer = graph.values[parts[0]].layer
    total = OpBuilder(graph, layer=layer).emit("add_n", *parts)
    parts[:] = [total]
    return total


def _check_grad(op: Op, graph: Graph, value: str, grad: str) -> None:
    want, got = graph.type_of(value), graph.type_of(grad)
    if want.dtype != got.dtype or want.rank != got.rank:
        raise NotDifferentiableError(
            f"the vjp of op {op.id!r} ({op.type}, layer {op.layer!r}) returned a gradient of type {got} "
            f"for input {value!r} of type {want}")


def gradients(graph: Graph, loss: str, wrt: Iterable[str], *, seed: str | None = None) -> dict[str, str]:
    """Append the gradient of ``loss`` with respect to each of ``wrt``; returns ``{value: gradient}``.

    ``loss`` must be a float scalar unless ``seed`` (its cotangent, same type) is given. Values
    of ``wrt`` that ``loss`` does not depend on are left out of the result (as Keras leaves
    their gradient None). Raises NotDifferentiableError naming the op (and its layer) when a
    gradient must flow through an op without a ``vjp`` facet.
    """
    wrt = list(wrt)
    for v in [loss, *wrt]:
        if v not in graph.values:
            raise ValueError(f"gradients: {v!r} is not a value of graph {graph.name!r}")
    loss_type = graph.type_of(loss)
    if not is_float(loss_type.dtype):
        raise ValueError(f"gradients: the loss {loss!r} must be a float tensor, got {loss_type}")
    order = graph.ops()
    active = {v for v in wrt if is_float(graph.type_of(v).dtype)}
    for op in order:
        if any(v in active for v in op.inputs) and not get(op.type).not_differentiable:
            active.update(o for o in op.outputs if is_float(graph.type_of(o).dtype))
    useful = {loss}
    for op in reversed(order):
        if any(o in useful for o in op.outputs):
            useful.update(op.inputs)
    scalars: dict[tuple, str] = {}
    if seed is None:
        if loss_type.rank != 0:
            raise ValueError(f"gradients: the loss {loss!r} must be a scalar, got {loss_type}; pass seed=")
        seed = graph.add_constant(graph.unique_name("grad/seed"), np.ones((), dtype=loss_type.dtype))
    elif graph.type_of(seed) != loss_type:
        raise ValueError(f"gradients: seed {seed!r} is {graph.type_of(seed)}, the loss is {loss_type}")
    cot: dict[str, list[str]] = {loss: [seed]}
    for op in reversed(order):
        if not any(o in cot for o in op.outputs):
            continue
        needs = [v in active and v in useful for v in op.inputs]
        if not any(needs):
            continue
        opdef = get(op.type)
        if opdef.not_differentiable:
            continue
        if opdef.vjp is None:
            where = f"op {op.id!r} ({op.type}" + (f", layer {op.layer!r})" if op.layer else ")")
            raise NotDifferentiableError(f"{where} has no gradient (no vjp facet); cannot differentiate "
                                         f"{loss!r} through it")
        outs = [_total(graph, cot[o]) if o in cot else None for o in op.outputs]
        ctx = GradContext(graph, op, opdef.resolve_attrs(op.attrs), needs, scalars)
        in_grads = opdef.vjp(ctx, *outs)
        if len(in_grads) != len(op.inputs):
            raise NotDifferentiableError(f"the vjp of op {op.id!r} ({op.type}) returned {len(in_grads)} "
                                         f"gradients for {len(op.inputs)} inputs")
        for v, g, need in zip(op.inputs, in_grads, needs):
            if need and g is not None:
                g = ctx.match(g, v)
                _check_grad(op, graph, v, g)
                cot.setdefault(v, []).append(g)
    return {w: _total(graph, cot[w]) for w in wrt if w in cot}


def prune(graph: Graph, keep: Iterable[str] = ()) -> int:
    """Remove ops and constants that no graph output (nor a value in ``keep``) depends on."""
    live = set(graph.outputs) | set(keep)
    dead = []
    for op in reversed(graph.ops()):
        if any(o in live for o in op.outputs):
            live.update(op.inputs)
        else:
            dead.append(op)
    for op in dead:  # consumers before producers: each one is unused when removed
        graph.remove_op(op.id)
    for name in [n for n in graph.constants if n not in live]:
        graph.remove_constant(name)
    return len(dead)
