"""Loss and metric functions written by the user with graphc ops, traced into the step graph.

``model.compile(loss=my_loss, metrics=[my_metric])`` with ``def my_loss(y_true, y_pred)`` written
with ``graphc.ops`` (Keras's ``keras.ops`` names) and tensor operators, and ``Loss`` subclasses
that define ``call(self, y_true, y_pred)``, are compiled the way a custom layer's ``call`` is
(:mod:`graphc.frontend.tracing`): the function runs once per step graph on traced tensors whose
ops emit IR into the graph, so the loss is differentiated, run natively and exported like a
built-in one. Called on arrays, the same trace runs on the reference interpreter.

Python that needs a tensor's value (``if`` on a tensor, ``float(x)``, NumPy functions applied to
tensors) cannot be traced; the :class:`~graphc.frontend.tracing.TracingError` names the function
and the line of the user's code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.frontend.lowering import LowerContext
from graphc.frontend.tracing import Trace, TracedTensor, TracingError
from graphc.ops.builder import OpBuilder

_GRAPHC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


class _NoLayer:
    """What a function trace stands on instead of a layer: a name, no sublayers."""

    def __init__(self, name: str):
        self.name = name

    def _sublayers(self) -> list:
        return []


class FunctionTrace(Trace):
    """The trace of one loss or metric function (``what`` names it in errors: "loss function 'my_loss'")."""

    def __init__(self, what: str, ctx: LowerContext):
        super().__init__(_NoLayer(what), ctx)
        self.what = what
        self.frame = sys._getframe(1)

    def wrap(self, value: Any) -> Any:
        wrapped = super().wrap(value)
        return _FunctionTensor(self, value) if isinstance(wrapped, TracedTensor) else wrapped

    def _lower_source(self, tensor):
        raise self.refusal(f"the symbolic tensor {tensor.name} (a layer called inside it)")

    def refusal(self, what: str) -> TracingError:
        where = _user_line(self.frame)
        return TracingError(
            f"{self.what} uses {what}{f' at {where}' if where else ''}. graphc compiles the function once into "
            "the training step, so tensor values are not known while it runs: write it with tensor ops "
            "(graphc.ops.where(cond, a, b) instead of `if`, graphc.ops.* instead of NumPy functions, Python "
            "numbers and loops over tensors)")


# NumPy's ufuncs that Python operators call (``array + tensor``): the tensor's operator runs instead
_OPERATOR_UFUNCS = {np.add: "__radd__", np.subtract: "__rsub__", np.multiply: "__rmul__",
                    np.true_divide: "__rtruediv__", np.power: "__rpow__", np.greater: "__lt__", np.less: "__gt__",
                    np.greater_equal: "__le__", np.less_equal: "__ge__"}


class _FunctionTensor(TracedTensor):
    """A traced tensor of a loss or metric function: NumPy functions applied to it are refused by name (an
    array operand of a Python operator, ``array * y_pred``, is a constant of the trace)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        reflected = _OPERATOR_UFUNCS.get(ufunc)
        if method == "__call__" and reflected and not kwargs and len(inputs) == 2 and inputs[1] is self:
            return getattr(self, reflected)(inputs[0])
        raise self._trace.refusal(f"NumPy's {ufunc.__name__}() on a tensor (use graphc.ops.{ufunc.__name__})")

    def __array_function__(self, func, types, args, kwargs):
        raise self._trace.refusal(f"NumPy's {func.__name__}() on a tensor (use graphc.ops.{func.__name__})")


def _user_line(outermost) -> str | None:
    """``file:line`` of the innermost frame of the user's code (not graphc's, not NumPy's: a NumPy function
    applied to a tensor is reported where the user called it)."""
    frame = sys._getframe(2)
    while frame is not None and frame is not outermost:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith((_GRAPHC_DIR + os.sep, _NUMPY_DIR + os.sep)):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def describe(kind: str, fn: Callable) -> str:
    """How errors name a user's function: "loss function 'my_loss'"."""
    return f"{kind} {getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None) or repr(fn)!r}"


def check_traceable(fn: Callable, kind: str) -> None:
    """Refuse what cannot be traced with graphc ops before a step is built: Keras's own functions and objects
    (they compute with the Keras backend; graphc has its own, under the same names)."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    if module.split(".")[0] == "keras":
        name = getattr(fn, "__name__", type(fn).__name__)
        raise ValueError(f"{kind} {name!r} is Keras's own ({module}); give graphc its name ({name!r}) or graphc's "
                         f"object (graphc.losses / graphc.metrics), or write it with graphc.ops")
    if not callable(fn):
        raise ValueError(f"cannot interpret {fn!r} as a {kind}")


def trace_values(fn: Callable, what: str, b: OpBuilder, args: tuple[str, ...], kwargs: dict[str, Any]) -> str:
    """The IR value ``fn(*args, **kwargs)`` computes, ``args`` being IR values of ``b``'s graph."""
    ctx = LowerContext(b.graph, b.layer)
    with FunctionTrace(what, ctx) as trace:
        out = fn(*[trace.wrap(a) for a in args], **kwargs)
        if out is None:
            raise trace.refusal("no return value (it returned None)")
        return trace.output(out)


def find_object(kind: str, *names: str | None) -> Any:
    """The user's function or class a compile configuration names (its registered name, then its plain name:
    ``custom_objects=`` of ``load_model``, a ``custom_object_scope`` or ``register_keras_serializable``); a clear
    error when none is known."""
    from graphc.saving.custom_objects import get_registered_object

    names = tuple(dict.fromkeys(n for n in names if n))
    found = next((obj for obj in map(get_registered_object, names) if obj is not None), None)
    if found is None:
        name = names[-1] if names else "?"
        raise ValueError(f"Could not locate {kind} {name!r}: pass custom_objects={{{name!r}: ...}} to load_model, "
                         "or register it with @graphc.saving.register_keras_serializable()")
    return found


def as_float(b: OpBuilder, value: str, dtype: str = "float32") -> str:
    return value if b.graph.type_of(value).dtype == dtype else b.cast(value, dtype=dtype)


__all__ = ["FunctionTrace", "trace_values", "check_traceable", "describe", "find_object", "as_float"]
