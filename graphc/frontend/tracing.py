"""Tracing a custom layer's ``call`` into IR ops.

A layer written the Keras way computes in ``call(self, inputs, ...)`` with ``graphc.ops`` and
tensor operators. graphc runs that Python once per lowering, on :class:`TracedTensor` arguments:
each op applied to them emits its IR ops into the layer's :class:`LowerContext` (see
``graphc.frontend.operations.apply``), weights become graph constants through ``ctx.param``, and
sublayers called inside ``call`` (``self.dense(x)``) are lowered in place. The result is an
ordinary graph, so the layer compiles, exports to ONNX, runs natively and trains like a built-in.

A sublayer called on a traced tensor goes through its usual symbolic call (it is built, and its
output shapes are derived); its output is lowered when the trace first meets it, and the nodes
those calls leave on the sublayers are removed when the trace ends. A sublayer called on concrete
values (``self.pos_emb(ops.arange(n))``) is called on them as constants of the trace, the same
way: computing it at once would freeze its weights into the graph.

What a trace cannot follow is Python that needs a tensor's *value* (``if x > 0``, ``float(x)``,
iterating over a tensor): the values exist only when the compiled model runs. Those uses raise a
:class:`TracingError` naming the layer and the line of the user's code.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.frontend import nest
from graphc.frontend.tensor import KerasTensor
from graphc.ir import dims

if TYPE_CHECKING:
    from graphc.frontend.layer import Layer
    from graphc.frontend.lowering import LowerContext

_ABSENT = object()
_GRAPHC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_local = threading.local()


class TracingError(TypeError):
    """A custom layer's ``call`` uses a tensor in a way graphc cannot compile."""


def _stack() -> list[Trace]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def user_location(outermost=None) -> str | None:
    """``file:line`` of the innermost frame outside graphc: the user's code being traced.

    The search stops at frame ``outermost`` (the one that started the trace): None when no
    user code is running inside it.
    """
    frame = sys._getframe(1)
    while frame is not None and frame is not outermost:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_GRAPHC_DIR + os.sep):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def current_trace(args: Any) -> Trace | None:
    """The trace that ops applied to ``args`` emit into, or None.

    That is the trace of a traced tensor among ``args``; while a trace is active, symbolic
    tensors (a sublayer's outputs inside ``call``) belong to the innermost one.
    """
    leaves = nest.flatten(list(args) if isinstance(args, tuple) else args)
    for x in leaves:
        if isinstance(x, TracedTensor):
            return x._trace
    stack = _stack()
    if stack and any(isinstance(x, KerasTensor) for x in leaves):
        return stack[-1]
    return None


def refuse(what: str) -> None:
    """Raise the error for a tensor's value needed by Python (``what``), naming the traced layer and line."""
    stack = _stack()
    if stack:
        raise stack[-1].refusal(what)


class Trace:
    """One lowering of one layer's ``call``: traced tensors, the sublayer calls lowered so far."""

    def __init__(self, layer: Layer, ctx: LowerContext):
        self.layer = layer
        self.ctx = ctx
        self._lowered: dict[int, list] = {}
        self._node_counts: list[tuple[Layer, int]] = []
        self._sublayer_ids: set[int] = set()
        self._replaced: list[tuple[Layer, Any]] = []
        self.finished = False
        self.frame = sys._getframe(1)  # the frame that traces: user code runs below it

    # -------------------------------------------------------------- scope
    def __enter__(self) -> Trace:
        for sub in _all_sublayers(self.layer):
            self._sublayer_ids.add(id(sub))
            self._node_counts.append((sub, len(sub._inbound_nodes)))
            self._replaced.append((sub, sub.__dict__.get("_eager_call", _ABSENT)))
            sub._eager_call = functools.partial(self._call_on_values, sub)
        _stack().append(self)
        return self

    def __exit__(self, *exc) -> None:
        _stack().remove(self)
        self.finished = True
        for sub, count in self._node_counts:
            del sub._inbound_nodes[count:]
        for sub, previous in reversed(self._replaced):
            if previous is _ABSENT:
                del sub._eager_call
            else:
                sub._eager_call = previous

    def _call_on_values(self, layer: Layer, inputs: Any, kwargs: dict) -> Any:
        """A sublayer's call on concrete values inside ``call``: a symbolic call on constants of the trace."""
        from graphc.frontend.operations.base import array_dtype, constant

        def as_traced(x):
            if isinstance(x, KerasTensor) or not isinstance(x, (np.ndarray, np.generic, list, int, float)):
                return x
            array = np.asarray(x)
            return TracedTensor(self, constant(self.ctx, array, array_dtype(array)))

        traced = nest.map_structure(as_traced, inputs)
        return layer._symbolic_call(traced, {k: nest.map_structure(as_traced, v) if k != "training" else v
                                             for k, v in kwargs.items()})

    # -------------------------------------------------------------- values
    def wrap(self, value: Any) -> Any:
        """A traced tensor for IR value ``value``; anything that is not a value is returned as is."""
        if isinstance(value, str) and value in self.ctx.graph.values:
            return TracedTensor(self, value)
        return value

    def value_of(self, x: Any) -> Any:
        """The IR value behind ``x`` (a traced or symbolic tensor, a weight); other values unchanged."""
        from graphc.frontend.layer import Variable

        if isinstance(x, TracedTensor):
            if x._trace is not self:
                raise self.refusal(f"a tensor of {'a finished' if x._trace.finished else 'another'} "
                                   f"call() (layer {x._trace.layer.name!r})")
            return x.value
        if isinstance(x, KerasTensor):
            return self._lower_source(x)
        if isinstance(x, Variable):
            return self.ctx.param(x)
        return x

    def emit(self, lower, args) -> Any:
        """Run ``lower(ctx, values)`` on the values of ``args``; its outputs come back traced."""
        values = nest.map_structure(self.value_of, list(args))
        return nest.map_structure(self.wrap, lower(self.ctx, values))

    def output(self, x: Any) -> str:
        """The IR value a ``call`` returns for ``x`` (numbers become constants)."""
        from graphc.frontend.operations.base import constant, value_dtype

        value = self.value_of(x)
        if isinstance(value, str) and value in self.ctx.graph.values:
            return value
        if x is None:
            raise self.refusal("None as an output")
        return constant(self.ctx, value, value_dtype(self.ctx, value))

    def _lower_source(self, tensor: KerasTensor) -> str:
        """The value of a symbolic tensor made inside ``call`` by a sublayer: lower that call here."""
        history = tensor._keras_history
        if history is None:
            raise self.refusal(f"the symbolic tensor {tensor.name}, which no layer call produced")
        layer, node_index, tensor_index = history
        node = layer._inbound_nodes[node_index]
        if id(node) not in self._lowered:
            if node.is_input:
                raise self.refusal(f"the model input {layer.name!r}, which is not an argument of call()")
            if id(layer) not in self._sublayer_ids:
                raise self.refusal(f"layer {layer.name!r}, which is not one of its sublayers (create sublayers "
                                   "in __init__ or build, not in call)")
            args = nest.map_structure(self.value_of, node.call_args)
            kwargs = {k: nest.map_structure(self.value_of, v) for k, v in node.call_kwargs.items()}
            out = layer.lower(self.ctx.for_layer(f"{self.ctx.layer}/{layer.name}"), args, **kwargs)
            self._lowered[id(node)] = nest.flatten(out)
        return self._lowered[id(node)][tensor_index]

    # -------------------------------------------------------------- errors
    def refusal(self, what: str) -> TracingError:
        where = user_location(self.frame)
        return TracingError(
            f"layer {self.layer.name!r} ({type(self.layer).__name__}): call() uses {what}"
            f"{f' at {where}' if where else ''}. "
            "graphc compiles call() once for every input, so tensor values are not known while it runs: "
            "write the computation with tensor ops (graphc.ops.where(cond, a, b) instead of `if`, "
            "graphc.ops.* instead of Python numbers and loops over tensors)")


def _all_sublayers(layer: Layer) -> list[Layer]:
    out, seen, stack = [], {id(layer)}, list(layer._sublayers())
    while stack:
        sub = stack.pop(0)
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        out.append(sub)
        stack.extend(sub._sublayers())
    return out


class TracedTensor(KerasTensor):
    """A tensor inside a traced ``call``: an IR value of the layer's lowering.

    It has a shape (None for dims known only at run time) and a dtype, takes every operator
    and ``graphc.ops`` function, and can be passed to sublayers; it has no value.
    """

    def __init__(self, trace: Trace, value: str):
        t = trace.ctx.graph.type_of(value)
        super().__init__(tuple(d if isinstance(d, int) else None for d in t.shape), t.dtype)
        self._trace = trace
        self.value = value

    def _refuse(self, what: str):
        raise self._trace.refusal(what)

    def __bool__(self) -> bool:
        self._refuse("the truth value of a tensor (`if`, `while`, `and`/`or`, `not` or bool())")

    def __float__(self) -> float:
        self._refuse("a tensor as a Python float")

    def __int__(self) -> int:
        self._refuse("a tensor as a Python int")

    def __index__(self) -> int:
        self._refuse("a tensor as a Python index")

    def __iter__(self):
        self._refuse("iteration over a tensor")

    def __len__(self) -> int:
        self._refuse("len() of a tensor")

    def __array__(self, *args, **kwargs):
        self._refuse("a tensor as a NumPy array")

    def numpy(self):
        self._refuse("numpy() of a tensor")

    def item(self):
        self._refuse("item() of a tensor")

    def tolist(self):
        self._refuse("tolist() of a tensor")

    def __repr__(self) -> str:
        return f"<TracedTensor shape={self.shape}, dtype={self.dtype}, value={self.value}>"


class SymbolicDim:
    """A dimension known only when the model runs (``ops.shape(x)[0]`` in a traced ``call``).

    It can be a reshape target entry and takes ``+ - *`` with ints and other such dims (``//``
    by an int); using it as a Python number is refused like any tensor value.
    """

    def __init__(self, dim: dims.Dim, trace: Trace):
        self.dim = dim
        self._trace = trace

    def _other(self, other: Any) -> dims.Dim | None:
        if isinstance(other, SymbolicDim):
            return other.dim
        if isinstance(other, int) and not isinstance(other, bool):
            return other
        return None

    def _combine(self, other: Any, fn) -> SymbolicDim:
        dim = self._other(other)
        if dim is None:
            return NotImplemented
        return SymbolicDim(fn(dim), self._trace)

    def __add__(self, other):
        return self._combine(other, lambda d: dims.add(self.dim, d))

    __radd__ = __add__

    def __sub__(self, other):
        return self._combine(other, lambda d: dims.sub(self.dim, d))

    def __rsub__(self, other):
        return self._combine(other, lambda d: dims.sub(d, self.dim))

    def __mul__(self, other):
        return self._combine(other, lambda d: dims.mul(self.dim, d))

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if not isinstance(other, int) or isinstance(other, bool):
            return NotImplemented
        return SymbolicDim(dims.floordiv(self.dim, other), self._trace)

    def __bool__(self) -> bool:
        raise self._trace.refusal("a run-time dimension as a Python truth value")

    def __int__(self) -> int:
        raise self._trace.refusal("a run-time dimension as a Python int")

    def __index__(self) -> int:
        raise self._trace.refusal("a run-time dimension as a Python index")

    def __repr__(self) -> str:
        return f"<SymbolicDim {self.dim}>"


def trace_call(layer: Layer, ctx: LowerContext, inputs: Any, kwargs: dict) -> Any:
    """The IR values ``layer.call`` computes on the IR values ``inputs`` (and ``kwargs``).

    ``training`` defaults to the lowering's mode when ``call`` takes it; a ``mask`` (the inputs'
    masks) is passed only when ``call`` takes one, as Keras does.
    """
    params = inspect.signature(layer.call).parameters
    kwargs = dict(kwargs)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "training" in params or takes_any:
        if kwargs.get("training") is None:
            kwargs["training"] = ctx.training
    elif kwargs.get("training") is not None:
        raise TypeError(f"layer {layer.name!r} ({type(layer).__name__}): call() takes no 'training' argument")
    else:
        kwargs.pop("training", None)
    if "mask" in kwargs and "mask" not in params and not takes_any:
        kwargs.pop("mask")
    return trace_function(layer, ctx, layer.call, (inputs,), kwargs)


def trace_function(layer: Layer, ctx: LowerContext, fn, args: tuple, kwargs: dict, *,
                   none_allowed: bool = False) -> Any:
    """The IR values Python function ``fn`` (a method of ``layer``) computes from IR values ``args`` and
    ``kwargs``; with ``none_allowed``, None results stay None (``compute_mask``'s "no mask")."""
    with Trace(layer, ctx) as trace:
        traced_args = nest.map_structure(trace.wrap, list(args))
        traced_kwargs = {k: nest.map_structure(trace.wrap, v) for k, v in kwargs.items()}
        out = fn(*traced_args, **traced_kwargs)
        return nest.map_structure(lambda x: None if x is None and none_allowed else trace.output(x), out)


__all__ = ["TracedTensor", "Trace", "TracingError", "SymbolicDim", "trace_call", "trace_function", "current_trace",
           "refuse",
           "user_location"]
