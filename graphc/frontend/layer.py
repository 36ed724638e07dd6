"""The Layer base class: weights, calls on symbolic tensors or arrays, and call history.

A layer subclass writes ``build(input_shape)`` (create weights with ``add_weight``) and
``lower(ctx, inputs, **kwargs)`` (emit the IR ops it computes). Output shapes are never
written by hand: calling a layer on symbolic tensors lowers it into a scratch graph and
reads the result types from the ops' shape rules, so the front end and the IR cannot
disagree about a shape.

Masks follow Keras's protocol. A layer whose outputs carry a mask sets ``supports_masking``
(or overrides ``lower_mask``, Keras's ``compute_mask``: it emits the output mask(s) for the
inputs and their masks). When an input carries a mask and ``lower`` takes a ``mask``
argument that the call does not give, ``lower`` receives the inputs' masks (a structure like
``inputs``, None where a tensor has none); a tensor given as keyword argument ``name`` passes
its mask as ``name_mask`` when ``lower`` takes that (MultiHeadAttention's ``value_mask``).
Masks are IR values (:mod:`graphc.frontend.masking`): symbolic tensors describe theirs in
``_keras_mask``, and the model's lowering carries them beside the values (``_lower_call``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import warnings
from typing import Any

import numpy as np

from graphc.frontend import constraints, initializers, nest, regularizers, state
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor, Node
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType, normalize_dtype
from graphc.ops.registry import ShapeError

_scratch_ids = itertools.count()


_GENERATIONS = itertools.count(1)  # Variable.generation's values: unique, so no change is ever missed


class Variable:
    """A layer weight: a NumPy array with a name, a path, a trainable flag, and the regularizer
    (a penalty added to the training loss) and constraint (a projection after each update) that
    training applies to it."""

    def __init__(self, value: np.ndarray, name: str, path: str, trainable: bool = True,
                 regularizer: regularizers.Regularizer | None = None,
                 constraint: constraints.Constraint | None = None):
        self._value = np.array(value, order="C")  # a copy; 0-d stays 0-d (ascontiguousarray makes it 1-d)
        self.name = name
        self.path = path
        self.trainable = trainable
        self.regularizer = regularizer
        self.constraint = constraint
        self.version = 0

    # Moves on with every change of any Variable's value: one comparison tells a compiled model that
    # no weight changed since it last looked, without reading every weight's version.
    generation: int = 0

    @property
    def version(self) -> int:
        """How many times this weight's value changed (assignments, training steps on either backend)."""
        return self._version

    @version.setter
    def version(self, value: int) -> None:
        self._version = value
        Variable.generation = next(_GENERATIONS)

    @property
    def value(self) -> np.ndarray:
        return self._value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._value.shape

    @property
    def dtype(self) -> str:
        return self._value.dtype.name

    def numpy(self) -> np.ndarray:
        return self._value.copy()

    def assign(self, value) -> None:
        value = np.asarray(value)
        if value.shape != self._value.shape:
            raise ValueError(f"cannot assign a value of shape {value.shape} to weight {self.path!r} "
                             f"of shape {self._value.shape}")
        self._value = np.array(value, dtype=self._value.dtype, order="C")
        self.version += 1

    def __repr__(self) -> str:
        return f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}>"


def _shape_tuple(shape) -> tuple:
    if shape is None:
        return None
    if isinstance(shape, int):
        return (shape,)
    return tuple(None if d is None else int(d) for d in shape)


class Layer:
    """Base class of every layer (and of Model)."""

    _allowed_kwargs = {"input_shape", "batch_input_shape", "batch_size", "input_dim", "dtype",
                       "trainable", "name", "autocast", "input_length"}

    def __init__(self, *, name: str | None = None, trainable: bool = True, dtype=None, activity_regularizer=None,
                 **kwargs):
        unknown = set(kwargs) - self._allowed_kwargs
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {sorted(unknown)}")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"invalid layer name {name!r}: a non-empty string without '/'")
        self.name = name or state.unique_name(state.to_snake_case(type(self).__name__))
        self._trainable = bool(trainable)
        self.dtype = normalize_dtype(dtype) if dtype is not None and not isinstance(dtype, dict) else "float32"
        self.built = False
        self._trainable_weights: list[Variable] = []
        self._non_trainable_weights: list[Variable] = []
        self._inbound_nodes: list[Node] = []
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._weight_option_keys: tuple[str, ...] = ()
        self._activity_losses: list[np.ndarray] = []
        self._lowering_depth = 0
        self._batch_input_shape = None
        if "batch_input_shape" in kwargs:
            self._batch_input_shape = _shape_tuple(kwargs["batch_input_shape"])
        elif "input_shape" in kwargs:
            self._batch_input_shape = (kwargs.get("batch_size"),) + _shape_tuple(kwargs["input_shape"])
        elif "input_dim" in kwargs:
            self._batch_input_shape = (kwargs.get("batch_size"), int(kwargs["input_dim"]))

    def __init_subclass__(cls, **kwargs):
        """Wrap each subclass's ``build`` so that any call to it (direct or not) marks the layer built,
        and its ``lower`` so that the activity regularizer sees every output."""
        super().__init_subclass__(**kwargs)
        lower = cls.__dict__.get("lower")
        if lower is not None and not getattr(lower, "_adds_activity_loss", False):
            cls.lower = _adds_activity_loss(lower)
        build = cls.__dict__.get("build")
        if build is not None and not getattr(build, "_marks_built", False):
            @functools.wraps(build)
            def wrapped(self, *args, **kw):
                result = build(self, *args, **kw)
                self.built = True
                self._build_input_shape = args[0] if args else kw.get("input_shape")
                return result

            wrapped._marks_built = True
            cls.build = wrapped

    # ------------------------------------------------------------------ weights
    def add_weight(self, name: str, shape, initializer="glorot_uniform", trainable: bool = True,
                   dtype="float32", regularizer=None, constraint=None) -> Variable:
        """A new weight; ``regularizer`` adds its penalty to the training loss, ``constraint``
        projects it after each optimizer update (names, configs or instances, as in Keras)."""
        shape = tuple(int(d) for d in shape)
        value = initializers.get(initializer)(shape, dtype=normalize_dtype(dtype))
        var = Variable(value, name, f"{self.name}/{name}", trainable and self.trainable,
                       regularizer=regularizers.get(regularizer), constraint=constraints.get(constraint))
        (self._trainable_weights if trainable else self._non_trainable_weights).append(var)
        return var

    def _set_weight_options(self, **options) -> None:
        """Keep Keras's regularizer and constraint arguments (``kernel_regularizer=``,
        ``bias_constraint=``, ``activity_regularizer=``...) as resolved attributes of the same
        names, listed in ``get_config``; ``build`` hands each to ``add_weight`` for its weight."""
        for key, value in options.items():
            if key == "activity_regularizer":
                self.activity_regularizer = regularizers.get(value)
                continue
            if key.endswith("_regularizer"):
                setattr(self, key, regularizers.get(value))
            elif key.endswith("_constraint"):
                setattr(self, key, constraints.get(value))
            else:
                raise TypeError(f"{type(self).__name__}: {key!r} is not a regularizer or constraint option")
            self._weight_option_keys += (key,)

    def _weight_options_config(self) -> dict:
        config = {}
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        for key in self._weight_option_keys:
            value = getattr(self, key)
            config[key] = (regularizers.serialize(value) if key.endswith("_regularizer")
                           else constraints.serialize(value))
        return config

    @property
    def losses(self) -> list[np.ndarray]:
        """Keras's ``layer.losses``: the activity penalties of the last call on arrays, then the
        regularization penalty of each trainable weight that has a regularizer (float scalars)."""
        out = list(self._activity_losses)
        for var in self.trainable_weights:
            if var.regularizer is not None:
                out.append(var.regularizer(var.value))
        return out

    def _add_activity_losses(self, ctx: LowerContext, outputs) -> None:
        """Record the activity penalty of each output (divided by its batch size, as Keras does)
        in ``graph.meta["losses"]`` when the graph collects losses (training and evaluation steps)."""
        losses = ctx.graph.meta.get("losses")
        if losses is None or self.activity_regularizer is None:
            return
        for value in nest.flatten(outputs):
            if not isinstance(value, str) or value not in ctx.graph.values:
                continue
            penalty = self.activity_regularizer.emit(ctx, value)
            if ctx.dtype(penalty) != "float32":
                penalty = ctx.cast(penalty, dtype="float32")
            if ctx.rank(value) > 0:
                penalty = ctx.div(penalty, ctx.num_elements(value, axes=(0,), dtype="float32"))
            losses.append(penalty)

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """Freeze or unfreeze this layer, its trainable weights and all its sublayers (as Keras does)."""
        self._trainable = bool(value)
        for w in self._trainable_weights:
            w.trainable = self._trainable
        for layer in self._sublayers():
            layer.trainable = self._trainable

    def _sublayers(self) -> list[Layer]:
        return []

    @property
    def weights(self) -> list[Variable]:
        out, seen = [], set()
        for w in self._trainable_weights + self._non_trainable_weights:
            if id(w) not in seen:
                seen.add(id(w))
                out.append(w)
        for layer in self._sublayers():
            for w in layer.weights:
                if id(w) not in seen:
                    seen.add(id(w))
                    out.append(w)
        return out

    @property
    def trainable_weights(self) -> list[Variable]:
        if not self.trainable:
            return []
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        if not self.trainable:
            return self.weights
        return [w for w in self.weights if not w.trainable]

    @property
    def variables(self) -> list[Variable]:
        return self.weights

    def get_weights(self) -> list[np.ndarray]:
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights) -> None:
        params = self.weights
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(f"layer {self.name!r} expects {len(params)} weight arrays "
                             f"({[w.path for w in params]}), got {len(weights)}")
        for var, value in zip(params, weights):
            value = np.asarray(value)
            if value.shape != var.shape:
                raise ValueError(f"layer {self.name!r}: weight {var.path!r} has shape {var.shape}, "
                                 f"got an array of shape {value.shape}")
        for var, value in zip(params, weights):
            var.assign(value)

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet: call it on an input first, or "
                             "pass input_shape=")
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    # ------------------------------------------------------------------ to override
    def build(self, input_shape) -> None:
        """Create the weights for inputs of ``input_shape`` (None for free dims)."""
        self.built = True

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        """Emit IR ops computing this layer on ``inputs`` (value names); return output value names."""
        raise NotImplementedError(f"{type(self).__name__} does not define lower()")

    def check_inputs(self, inputs) -> None:
        """Refuse inputs this layer cannot take (rank, dtype); raise ValueError naming them."""

    # ------------------------------------------------------------------ masking (Keras's protocol)
    @property
    def supports_masking(self) -> bool:
        """Whether this layer's outputs carry a mask (``lower_mask``'s); True when it overrides it."""
        value = self.__dict__.get("_supports_masking")
        return type(self).lower_mask is not Layer.lower_mask if value is None else value

    @supports_masking.setter
    def supports_masking(self, value: bool) -> None:
        self._supports_masking = bool(value)

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        """Emit the output mask(s) given the inputs and their mask(s) (Keras's ``compute_mask``):
        value names, a structure like the outputs, or None. The default passes ``mask`` on."""
        return mask

    def _lower_call(self, ctx: LowerContext, inputs, kwargs: dict, masks=None, kwarg_masks=None):
        """Lower one call, masks included, as Keras's ``__call__`` handles them: returns the
        outputs and their masks (None when the layer does not support masking).

        ``masks`` holds the inputs' masks (a structure like ``inputs``). ``lower`` receives
        them as ``mask`` when it takes that argument and the call gave none; ``lower_mask``
        receives the explicit mask if there is one, else the inputs' masks. ``kwarg_masks``
        holds the masks of tensors given by keyword: ``lower`` receives keyword ``name``'s as
        ``name_mask`` when it takes that argument and the call gave none.
        """
        kwargs = dict(kwargs)
        if kwargs.get("mask") is None and _has_mask(masks) and lower_takes(self, "mask"):
            kwargs["mask"] = masks
        for name, mask in (kwarg_masks or {}).items():
            if kwargs.get(f"{name}_mask") is None and _has_mask(mask) and lower_takes(self, f"{name}_mask"):
                kwargs[f"{name}_mask"] = mask
        outputs = self.lower(ctx, inputs, **kwargs)
        if not self.supports_masking:
            return outputs, None
        previous = kwargs["mask"] if kwargs.get("mask") is not None else masks
        return outputs, self.lower_mask(ctx, inputs, previous)

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype,
                  **self._weight_options_config()}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        """The layer ``get_config()`` describes; Keras's configs are accepted too (graphc.saving)."""
        from graphc.saving.functional import layer_from_config

        return layer_from_config(cls, config)

    # ------------------------------------------------------------------ calling
    def __call__(self, *args, **kwargs):
        inputs = args[0] if len(args) == 1 else list(args) if args else kwargs.pop("inputs")
        leaves = nest.flatten((inputs, kwargs))
        symbolic = [x for x in leaves if isinstance(x, KerasTensor)]
        if symbolic:
            return self._symbolic_call(inputs, kwargs)
        return self._eager_call(inputs, kwargs)

    def _input_shapes(self, inputs):
        return nest.map_structure(lambda t: t.shape, inputs)

    def _maybe_build(self, inputs) -> None:
        if self.built:
            return
        shapes = self._input_shapes(inputs)
        try:
            self.build(shapes)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) cannot be built for input "
                             f"shape {shapes}: {exc}") from None
        self.built = True

    def _lower_symbolic(self, inputs, kwargs, graph_name: str):
        """Lower this layer on symbolic ``inputs`` into a scratch graph (None dims become fresh
        free dims); returns the graph, the output value names and their masks."""
        graph = Graph(graph_name)
        ctx = LowerContext(graph, self.name, training=False)
        counter = itertools.count()

        def to_value(x):
            if not isinstance(x, KerasTensor):
                return x
            shape = tuple(f"_d{next(counter)}" if d is None else d for d in x.shape)
            return graph.add_input(f"in{len(graph.inputs)}", TensorType(x.dtype, shape))

        arg_values = nest.map_structure(to_value, inputs)
        kw_values = {k: nest.map_structure(to_value, v) for k, v in kwargs.items()}
        def mask_of(x):
            return to_value(getattr(x, "_keras_mask", None))

        masks = nest.map_structure(mask_of, inputs)
        kwarg_masks = {k: nest.map_structure(mask_of, v) for k, v in kwargs.items()}
        outputs, out_masks = self._lower_call(ctx, arg_values, kw_values, masks, kwarg_masks)
        return graph, outputs, out_masks

    def _symbolic_call(self, inputs, kwargs):
        self._check_call(inputs)
        self._maybe_build(inputs)
        try:
            graph, out_values, out_masks = self._lower_symbolic(inputs, kwargs, f"{self.name}_call")
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) cannot be called on "
                             f"{_describe(inputs)}: {exc}") from None

        def to_tensor(v):
            t = graph.type_of(v)
            return KerasTensor(tuple(d if isinstance(d, int) else None for d in t.shape), t.dtype)

        outputs = nest.map_structure(to_tensor, out_values)
        for t, m in zip(nest.flatten(outputs), nest.flatten(out_masks)):
            if isinstance(t, KerasTensor) and m is not None:
                t._keras_mask = to_tensor(m)
        if out_masks is None and not self.supports_masking and \
                _has_mask(nest.map_structure(lambda x: getattr(x, "_keras_mask", None), inputs)):
            warnings.warn(f"Layer '{self.name}' (of type {type(self).__name__}) was passed an input with a mask "
                          "attached to it. However, this layer does not support masking and will therefore "
                          "destroy the mask information. Downstream layers will not see the mask.", stacklevel=3)
        Node(self, inputs, kwargs, outputs)
        return outputs

    def _check_call(self, inputs) -> None:
        try:
            self.check_inputs(inputs)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) cannot be called on "
                             f"{_describe(inputs)}: {exc}") from None

    def _eager_call(self, inputs, kwargs):
        """Call on NumPy arrays: lower into a scratch graph and run the reference interpreter."""
        from graphc.backends.reference import run

        arrays = nest.map_structure(np.asarray, inputs)
        probe = nest.map_structure(
            lambda a: KerasTensor(a.shape, _array_dtype(a)) if isinstance(a, np.ndarray) else a, arrays)
        self._check_call(probe)
        self._maybe_build(probe)
        graph = Graph(f"{self.name}_eager")
        graph.meta["losses"] = []
        ctx = LowerContext(graph, self.name, training=bool(kwargs.get("training", False)))
        feeds = {}

        def to_value(a):
            if not isinstance(a, np.ndarray):
                return a
            name = graph.add_input(f"in{len(graph.inputs)}", TensorType(_array_dtype(a), a.shape))
            feeds[name] = a
            return name

        arg_values = nest.map_structure(to_value, arrays)
        kw = {k: nest.map_structure(to_value, v) for k, v in kwargs.items() if k != "training"}
        out_values = self.lower(ctx, arg_values, **kw)
        flat = nest.flatten(out_values)
        losses = graph.meta.pop("losses")
        graph.set_outputs(list(dict.fromkeys(flat + losses)))
        results = run(graph, feeds)
        self._activity_losses = [results[v] for v in losses]
        return nest.pack_like(out_values, [results[v] for v in flat])

    # ------------------------------------------------------------------ history
    def _node(self, index: int, what: str) -> Node:
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has never been called and thus has no defined {what}")
        if not 0 <= index < len(self._inbound_nodes):
            raise ValueError(f"layer {self.name!r} has {len(self._inbound_nodes)} node(s); "
                             f"asked for node {index}")
        return self._inbound_nodes[index]

    def get_input_at(self, node_index: int):
        node = self._node(node_index, "input")
        return node.input_tensors[0] if len(node.input_tensors) == 1 else node.input_tensors

    def get_output_at(self, node_index: int):
        return self._node(node_index, "output").outputs

    @property
    def input(self):
        return self.get_input_at(0)

    @property
    def output(self):
        return self.get_output_at(0)

    @property
    def input_shape(self):
        return nest.map_structure(lambda t: t.shape, self.input)

    @property
    def output_shape(self):
        return nest.map_structure(lambda t: t.shape, self.output)

    def compute_output_shape(self, input_shape):
        """Output shape(s) for ``input_shape`` (None for free dims), from the ops' shape rules."""
        probe = nest.map_structure(lambda s: KerasTensor(s), input_shape) \
            if not isinstance(input_shape, tuple) or (input_shape and isinstance(input_shape[0], tuple)) \
            else KerasTensor(input_shape)
        self._maybe_build(probe)
        graph, out, _ = self._lower_symbolic(probe, {}, "probe")
        return nest.map_structure(
            lambda v: tuple(d if isinstance(d, int) else None for d in graph.type_of(v).shape), out)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _adds_activity_loss(lower):
    """``lower`` followed by the layer's activity penalties, once per call of the layer (a
    subclass's ``lower`` calling ``super().lower`` adds them once, at the outermost level)."""

    @functools.wraps(lower)
    def wrapped(self, ctx, *args, **kwargs):
        self._lowering_depth = getattr(self, "_lowering_depth", 0) + 1
        try:
            outputs = lower(self, ctx, *args, **kwargs)
        finally:
            self._lowering_depth -= 1
        if self._lowering_depth == 0 and getattr(self, "activity_regularizer", None) is not None:
            self._add_activity_losses(ctx, outputs)
        return outputs

    wrapped._adds_activity_loss = True
    return wrapped


Layer.lower = _adds_activity_loss(Layer.lower)


def _has_mask(masks) -> bool:
    return masks is not None and any(m is not None for m in nest.flatten(masks))


def lower_takes(layer: Layer, name: str) -> bool:
    """Whether ``layer.lower`` names argument ``name`` (Keras's ``_call_has_mask_arg``)."""
    return _names_argument(type(layer).lower, name)


@functools.cache
def _names_argument(fn, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params and params[name].kind is not inspect.Parameter.VAR_KEYWORD


def _array_dtype(a: np.ndarray) -> str:
    if np.issubdtype(a.dtype, np.floating):
        return "float32"
    if a.dtype == np.int64:
        return "int64"
    if np.issubdtype(a.dtype, np.integer):
        return "int32"
    return normalize_dtype(a.dtype)


def _describe(inputs: Any) -> str:
    parts = [f"{t.shape} {t.dtype}" if isinstance(t, KerasTensor) else repr(t) for t in nest.flatten(inputs)]
    return ("input of shape " if len(parts) == 1 else "inputs of shapes ") + ", ".join(parts)
