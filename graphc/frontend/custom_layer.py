"""``graphc.layers.Layer``: the base class of layers written the Keras way, with ``build`` and ``call``.

A subclass creates its weights in ``build(input_shape)`` with Keras's ``add_weight`` signature
and computes in ``call(self, inputs, ...)`` with ``graphc.ops``, tensor operators and sublayers
(layers held in attributes, as Keras tracks them). graphc traces ``call`` into IR ops
(``graphc.frontend.tracing``), so the layer compiles, exports and trains like a built-in one.

As in Keras, a subclass that does not define ``get_config`` is described by the arguments its
constructor was called with (when they are plain values), and ``isinstance(layer, Layer)`` holds
for every graphc layer, built-in ones included.
"""

from __future__ import annotations

import inspect
from typing import Any

from graphc.frontend.layer import Layer as BaseLayer
from graphc.frontend.layer import Variable
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tracing import trace_call, trace_function
from graphc.ir.types import is_float, normalize_dtype

_PLAIN = (str, int, float, bool, type(None))
_AGGREGATIONS = ("none", "mean", "sum", "only_first_replica")


class _PublicLayerType(type):
    """Makes ``graphc.layers.Layer`` the class every graphc layer is an instance of, as in Keras."""

    def __instancecheck__(cls, obj: Any) -> bool:
        if cls is Layer:
            return isinstance(obj, BaseLayer)
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        if cls is Layer:
            return isinstance(sub, type) and issubclass(sub, BaseLayer)
        return super().__subclasscheck__(sub)


class Layer(BaseLayer, metaclass=_PublicLayerType):
    """Subclass it, write ``build`` and ``call``; graphc traces ``call`` when it lowers the layer."""

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        instance._constructor_config = _constructor_config(cls, args, kwargs)
        return instance

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._variable_names: set[str] = set()

    # ------------------------------------------------------------------ weights
    def add_weight(self, shape=None, initializer=None, dtype=None, trainable: bool = True, autocast: bool = True,
                   regularizer=None, constraint=None, aggregation: str = "none",
                   overwrite_with_gradient: bool = False, name: str | None = None) -> Variable:
        """A new weight, with Keras 3's arguments and defaults (glorot_uniform for floats, zeros otherwise)."""
        if overwrite_with_gradient:
            raise NotImplementedError(f"layer {self.name!r}: add_weight(overwrite_with_gradient=True) is not "
                                      "supported by graphc")
        if aggregation not in _AGGREGATIONS:
            raise ValueError(f"layer {self.name!r}: add_weight aggregation must be one of {_AGGREGATIONS}, "
                             f"got {aggregation!r}")
        dtype = normalize_dtype(dtype or self.dtype)
        if initializer is None:
            initializer = "glorot_uniform" if is_float(dtype) else "zeros"
        name = name or self._next_variable_name()
        self._variable_names.add(name)
        options = {key: value for key, value in (("regularizer", regularizer), ("constraint", constraint))
                   if value is not None}
        return super().add_weight(name, () if shape is None else shape, initializer, trainable, dtype, **options)

    def _next_variable_name(self) -> str:
        names = getattr(self, "_variable_names", set())
        name, k = "variable", 0
        while name in names:
            k += 1
            name = f"variable_{k}"
        return name

    def _sublayers(self) -> list[BaseLayer]:
        """Layers held in attributes (alone, or in lists, tuples and dicts), in assignment order."""
        found: list[BaseLayer] = []
        for value in vars(self).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) \
                else (value,)
            for item in items:
                if isinstance(item, BaseLayer) and item is not self and all(item is not f for f in found):
                    found.append(item)
        return found

    # ------------------------------------------------------------------ calling
    def __call__(self, *args, **kwargs):
        """Arguments after the first go to ``call`` by name, so that the call is recorded as Keras reads it."""
        if len(args) > 1:
            params = list(inspect.signature(self.call).parameters.values())
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if not any(p.kind is p.VAR_POSITIONAL for p in params) and len(args) <= len(positional):
                for param, value in zip(positional[1:], args[1:]):
                    if param.name in kwargs:
                        raise TypeError(f"layer {self.name!r}: call() got two values for {param.name!r}")
                    kwargs[param.name] = value
                args = args[:1]
        return super().__call__(*args, **kwargs)

    def call(self, inputs, *args, **kwargs):
        """The layer's computation; subclasses define it with graphc ops on ``inputs``."""
        raise NotImplementedError(f"{type(self).__name__} defines neither call() nor lower()")

    def lower(self, ctx: LowerContext, inputs, mask=None, **kwargs):
        """Trace ``call`` (see ``graphc.frontend.tracing``); it gets ``mask`` when it takes one."""
        if mask is not None:
            kwargs["mask"] = mask
        return trace_call(self, ctx, inputs, kwargs)

    # ------------------------------------------------------------------ masks (Keras's protocol)
    @property
    def supports_masking(self) -> bool:
        """Set by the layer, else True when it defines ``compute_mask`` (as in Keras)."""
        value = self.__dict__.get("_supports_masking")
        return _overrides(type(self), "compute_mask") if value is None else value

    @supports_masking.setter
    def supports_masking(self, value: bool) -> None:
        self._supports_masking = bool(value)

    def compute_mask(self, inputs, previous_mask):
        """The outputs' mask: by default the inputs' (for a layer that sets ``supports_masking``)."""
        return previous_mask

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        """Trace ``compute_mask`` when the layer defines it."""
        if not _overrides(type(self), "compute_mask"):
            return mask
        return trace_function(self, ctx, self.compute_mask, (inputs, mask), {}, none_allowed=True)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Name, trainable and dtype, plus the constructor's arguments when the subclass has no get_config."""
        config = super().get_config()
        if _overrides(type(self), "get_config"):
            return config
        if self._constructor_config is None:
            raise NotImplementedError(
                f"layer {self.name!r} ({type(self).__name__}): its constructor takes arguments that are not plain "
                "values, so its config cannot be written; define get_config() (and from_config() if needed)")
        return {**config, **self._constructor_config}


def _overrides(cls: type, method: str) -> bool:
    """True when a class between ``cls`` and :class:`Layer` defines ``method``."""
    for klass in cls.__mro__:
        if klass is Layer:
            return False
        if method in klass.__dict__:
            return True
    return False


def _constructor_config(cls: type, args: tuple, kwargs: dict) -> dict | None:
    """The constructor's arguments (defaults included) as a config, or None when they are not plain values."""
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    config: dict = {}
    for index, (key, param) in enumerate(inspect.signature(cls.__init__).parameters.items()):
        if index == 0 or key not in bound.arguments:
            continue
        if param.kind is param.VAR_KEYWORD:
            config.update(bound.arguments[key])
        elif param.kind is param.VAR_POSITIONAL:
            if bound.arguments[key]:
                return None
        else:
            config[key] = bound.arguments[key]
    config.pop("name", None)
    return config if _is_plain(config) else None


def _is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, _PLAIN)


__all__ = ["Layer"]
