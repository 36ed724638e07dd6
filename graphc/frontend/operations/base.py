"""Keras operations (``keras.ops``): one class per Keras op, and the three ways to apply one.

An :class:`Operation` is a weightless layer whose Keras identity is a module
(``keras.src.ops.numpy``) and a class name (``Add``). Its constructor takes what Keras keeps in
the op's config (``Mean(axis, keepdims)``); its call takes the positional arguments Keras records
in the functional node (tensors and inline Python values: ``x + 3.0`` is ``Add()(x, 3.0)``).
Its ``lower(ctx, args)`` emits the IR ops, so an op runs wherever a layer runs.

:func:`apply` picks how to run an op from its arguments:

- symbolic tensors (``KerasTensor``): a new op layer becomes a node of the functional graph
  (named ``add``, ``add_1``... as Keras names its operations);
- tensors of a custom layer's traced ``call`` (see ``graphc.frontend.tracing``): the op's IR
  is emitted into that layer's lowering, with no node and no name;
- NumPy arrays and Python numbers: the op runs at once, through the reference interpreter, so
  that an op computes the same thing eagerly and compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from graphc.frontend import nest, state, tracing
from graphc.frontend.layer import Layer, Variable
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor
from graphc.ir.graph import Graph
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES, TensorType, is_float, normalize_dtype
from graphc.ops.registry import ShapeError

NUMPY = "keras.src.ops.numpy"
NN = "keras.src.ops.nn"
CORE = "keras.src.ops.core"
MATH = "keras.src.ops.math"

# (Keras module, Keras class name) -> graphc class, for reading Keras files.
OPERATIONS: dict[tuple[str, str], type[Operation]] = {}


class Operation(Layer):
    """A Keras operation as a functional-graph node: weightless, named like Keras's ops.

    Subclasses set ``keras_module``, take their Keras config as constructor arguments (listed in
    ``config_keys``) and define ``lower(ctx, args)``, where ``args`` are the call's positional
    arguments with every tensor replaced by its IR value name.
    """

    keras_module: ClassVar[str] = ""
    config_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.keras_module:
            OPERATIONS[(cls.keras_module, cls.__name__)] = cls

    def __init__(self, *, name: str | None = None):
        super().__init__(name=name or state.unique_name(state.to_snake_case(type(self).__name__)))
        self.built = True

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError(f"operation {type(self).__name__} takes positional arguments only, got "
                            f"{sorted(kwargs)}")
        if tracing.current_trace(args) is not None or not _is_symbolic(args):
            return apply(self, args)
        _check_symbolic_args(self, args)
        return self._symbolic_call(tuple(args), {})

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define lower()")

    @property
    def supports_masking(self) -> bool:
        """Handled here: an operation drops its inputs' masks, silently, as Keras's operations do."""
        return True

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        return None

    def get_config(self) -> dict:
        return {"name": self.name, **{key: _plain(getattr(self, key)) for key in self.config_keys}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_symbolic(args) -> bool:
    return any(isinstance(x, KerasTensor) for x in nest.flatten(list(args)))


def _check_symbolic_args(op: Operation, args) -> None:
    for x in nest.flatten(list(args)):
        if isinstance(x, Variable):
            raise TypeError(f"operation {type(op).__name__}: weight {x.path!r} cannot be an argument of an op "
                            "in a functional model; use weights inside a layer's call()")


def apply(op: Operation | type[Operation], args: Sequence, config: dict | None = None):
    """Run Keras op ``op`` (an instance, or a class with its ``config``) on ``args``.

    Symbolic tensors give a functional-graph node, traced tensors IR ops in the traced layer,
    anything else the values at once.
    """
    args = tuple(args)
    trace = tracing.current_trace(args)
    if trace is not None:
        instance = op if isinstance(op, Operation) else op(name=_anonymous(op), **(config or {}))
        return trace.emit(instance.lower, args)
    if _is_symbolic(args):
        instance = op if isinstance(op, Operation) else op(**(config or {}))
        return instance(*args)
    instance = op if isinstance(op, Operation) else op(name=_anonymous(op), **(config or {}))
    return _run_eagerly(instance, args)


def _anonymous(cls: type) -> str:
    """The name of an op that is not a graph node (eager or traced): no automatic name is used up."""
    return state.to_snake_case(cls.__name__)


def _run_eagerly(op: Operation, args: tuple):
    """The op's result on concrete values (NumPy arrays or Python numbers), by the reference interpreter."""
    from graphc.backends.reference import run

    graph = Graph(f"{op.name}_eager")
    ctx = LowerContext(graph, op.name)
    feeds: dict[str, np.ndarray] = {}

    def to_value(a):
        if isinstance(a, Variable):
            a = a.value
        if isinstance(a, (np.ndarray, np.generic)):
            array = np.asarray(a)
            array = array.astype(array_dtype(array), copy=False)
            name = graph.add_input(f"in{len(graph.inputs)}", TensorType(array.dtype.name, array.shape))
            feeds[name] = array
            return name
        return a

    values = nest.map_structure(to_value, args)
    out = op.lower(ctx, values)
    flat = [v if graph.values[v].kind == "op" else ctx.identity(v) for v in nest.flatten(out)]
    graph.set_outputs(flat)
    results = run(graph, feeds)
    return nest.pack_like(out, [results[v] for v in flat])


# ---------------------------------------------------------------------- operands in lower()
def array_dtype(array: np.ndarray) -> str:
    """graphc's dtype for a NumPy value: floats compute in float32, integers in int32 (int64 kept)."""
    if array.dtype == np.bool_:
        return "bool"
    if np.issubdtype(array.dtype, np.floating):
        return "float32"
    if array.dtype == np.int64:
        return "int64"
    if np.issubdtype(array.dtype, np.integer):
        return "int32"
    raise TypeError(f"cannot use a value of dtype {array.dtype} as a tensor")


def is_tensor(ctx: LowerContext, x: Any) -> bool:
    """True for an IR value name (what a tensor argument becomes in ``lower``)."""
    return isinstance(x, str) and x in ctx.graph.values


def constant(ctx: LowerContext, value: Any, dtype: str) -> str:
    """A graph constant holding ``value`` in ``dtype``."""
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"cannot use {value!r} as a tensor")
    return ctx.constant(array.astype(normalize_dtype(dtype)), name="const")


def value_dtype(ctx: LowerContext, x: Any) -> str:
    """The dtype ``x`` has (a tensor) or would take on its own (a Python or NumPy value)."""
    if is_tensor(ctx, x):
        return ctx.dtype(x)
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int32"
    if isinstance(x, float):
        return "float32"
    return array_dtype(np.asarray(x))


def _is_python_number(x: Any) -> bool:
    return isinstance(x, (bool, int, float))


def result_dtype(*dtypes: str) -> str:
    """Keras's promotion for the dtypes graphc has: floats win over integers, the wider type wins."""
    floats = [d for d in dtypes if d in FLOAT_DTYPES]
    if floats:
        return max(floats, key=lambda d: np.dtype(d).itemsize)
    ints = [d for d in dtypes if d in INT_DTYPES]
    if not ints:
        return "bool"
    if len(set(ints)) == 1:
        return ints[0]
    widest = max(ints, key=lambda d: np.dtype(d).itemsize)
    return widest if np.dtype(widest).itemsize >= 4 else "int32"


def operands(ctx: LowerContext, *xs: Any, dtype: str | None = None, floating: bool = False) -> list[str]:
    """Value names for ``xs`` in one common dtype (``dtype`` if given).

    Python numbers take the tensors' dtype, as Keras's weakly typed scalars do (an integer
    tensor plus a Python float becomes float32); ``floating`` makes integer results float32.
    """
    if dtype is None:
        tensor_dtypes = [value_dtype(ctx, x) for x in xs if not _is_python_number(x)]
        number_dtypes = [value_dtype(ctx, x) for x in xs if _is_python_number(x)]
        dtype = result_dtype(*tensor_dtypes) if tensor_dtypes else result_dtype(*number_dtypes)
        if any(d == "float32" for d in number_dtypes) and not is_float(dtype):
            dtype = "float32"
    if floating and not is_float(dtype):
        dtype = "float32"
    return [cast_to(ctx, x, dtype) for x in xs]


def cast_to(ctx: LowerContext, x: Any, dtype: str) -> str:
    """``x`` as a value of ``dtype`` (a cast op for tensors, a constant for anything else)."""
    if not is_tensor(ctx, x):
        if isinstance(x, Variable):
            return cast_to(ctx, ctx.param(x), dtype)
        return constant(ctx, x, dtype)
    return x if ctx.dtype(x) == dtype else ctx.cast(x, dtype=dtype)


def axes_of(axis: Any, rank: int, what: str) -> tuple[int, ...]:
    """Keras's ``axis`` argument (None: every axis; an int; a sequence) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(rank))
    items = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    out = []
    for a in items:
        if not isinstance(a, (int, np.integer)) or not -rank <= a < rank:
            raise ShapeError(f"{what}: axis {a!r} is out of bounds for an input of rank {rank}")
        out.append(int(a) % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: axis {axis!r} names an axis twice")
    return tuple(sorted(out))


__all__ = ["Operation", "OPERATIONS", "apply", "operands", "cast_to", "constant", "is_tensor", "value_dtype",
           "result_dtype", "array_dtype", "axes_of", "NUMPY", "NN", "CORE", "MATH"]
