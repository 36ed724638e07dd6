"""Keras class names <-> graphc layer classes, and layer configs translated both ways.

Every layer class that ``graphc.layers`` exports is importable under its Keras class name
(graphc's classes carry Keras's names, constructor arguments and defaults). A Keras config
is not always a valid set of graphc constructor arguments, so reading one goes key by key:

- ``dtype``: a ``DTypePolicy`` dict becomes its dtype name (a mixed policy, whose variables
  are float32, becomes float32: graphc computes in the variable dtype);
- initializer dicts become graphc initializers; arguments graphc's initializer does not
  take are dropped when they hold Keras's neutral value (``input_axes: None``);
- regularizer and constraint dicts (``kernel_regularizer``, ``activity_regularizer``...) are
  passed on as they are: graphc's layers read Keras's serialized form and honour them in
  training; a layer that takes no such option refuses a non-None one, naming it;
- a nested layer config (``TimeDistributed``'s ``layer``) is deserialized recursively;
- any other key graphc's class does not accept is dropped when it holds Keras's default or
  a neutral value (None, False, empty), and refused otherwise, naming the option.

Writing goes the other way: graphc's ``get_config()`` with the dtype as a ``DTypePolicy``
dict, initializers and nested layers serialized as Keras does, and the input-shape
arguments (which Keras 3 layers no longer take) left out.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.frontend import initializers
from graphc.frontend.input_layer import InputLayer
from graphc.frontend.layer import Layer
from graphc.frontend.model import Model
from graphc.frontend.sequential import Sequential
from graphc.saving import custom_objects
from graphc.saving.errors import KerasFormatError, UnsupportedKerasError

LAYERS_MODULE = "keras.layers"
_KERAS_LAYER_MODULES = ("keras.layers", "keras.src.layers", "keras.src.models", "keras.models")
FUNCTIONAL_NAMES = ("Functional", "Model")

# Keras options graphc may not take as constructor arguments, with the value that makes them
# inert; a Keras config holding exactly this value loses nothing when the key is dropped.
KERAS_DEFAULTS: dict[str, Any] = {
    "groups": 1, "dilation_rate": [1], "data_format": "channels_last", "lora_alpha": None,
    "zero_output_for_mask": False, "time_major": False, "unroll": False, "ragged": False,
    "sparse": False, "optional": False, "renorm": False, "synchronized": False, "keepdims": False,
    "mask_zero": False, "reset_after": True, "unit_forget_bias": True,
}
_INPUT_SHAPE_ARGS = ("batch_input_shape", "input_shape", "input_dim", "batch_size", "input_length")


@functools.lru_cache(maxsize=1)
def layer_classes() -> dict[str, type]:
    """Keras class name -> graphc class, for every layer graphc can import."""
    from graphc import layers as layer_module
    from graphc.frontend.custom_layer import Layer as CustomLayerBase
    from graphc.frontend.layers.wrappers import Wrapper

    found: dict[str, type] = {}
    for name in dir(layer_module):
        obj = getattr(layer_module, name)
        if inspect.isclass(obj) and issubclass(obj, Layer) and obj not in (Wrapper, CustomLayerBase) \
                and not name.startswith("_"):
            found.setdefault(obj.__name__, obj)
            found.setdefault(name, obj)
    found["InputLayer"] = InputLayer
    return found


def supported_keras_layers() -> list[str]:
    """The Keras layer class names graphc imports (aliases such as ``Convolution2D`` included)."""
    return sorted(set(layer_classes()) | {"Functional", "Sequential"})


@functools.lru_cache(maxsize=1)
def module_classes() -> dict[tuple[str, str], type]:
    """(Keras module, class name) -> graphc class, for the Keras classes outside ``keras.layers``:
    operations (``keras.src.ops.numpy`` ``Add``) and the layers of ``keras.applications``."""
    from graphc.applications.keras_layers import KERAS_CLASSES
    from graphc.frontend.operations import OPERATIONS

    return {**OPERATIONS, **KERAS_CLASSES}


def is_operation(layer: Layer) -> bool:
    """True for a ``keras.ops`` node (``x + 1``): Keras lists it in the config, not in ``model.layers``."""
    from graphc.frontend.operations import Operation

    return isinstance(layer, Operation)


def _writable_custom(cls: type) -> bool:
    """A user's class Keras writes by its registered name: a subclass of ``graphc.layers.Layer`` or a
    registered class."""
    from graphc.frontend.custom_layer import Layer as CustomLayerBase

    return CustomLayerBase in cls.__mro__[1:] or custom_objects.is_registered(cls)


def keras_identity(layer: Layer) -> tuple[str | None, str, str | None]:
    """``(module, class_name, registered_name)`` Keras writes for a layer that is not a model.

    graphc's layers are ``keras.layers`` classes; operations and the applications' layers keep
    their Keras modules; a user's layer is written as Keras writes a custom object (no module,
    its registered name). Any other class is refused.
    """
    cls = type(layer)
    module = getattr(cls, "keras_module", None)
    if module and module_classes().get((module, cls.__name__)) is cls:
        return module, cls.__name__, cls.__name__
    if layer_classes().get(cls.__name__) is cls:
        return LAYERS_MODULE, cls.__name__, None
    if _writable_custom(cls):
        return None, cls.__name__, custom_objects.get_registered_name(cls)
    raise UnsupportedKerasError(
        f"layer {layer.name!r} is a {cls.__name__}, which is not one of graphc's built-in layer classes; "
        "only those, subclasses of graphc.layers.Layer and classes registered with "
        "graphc.saving.register_keras_serializable can be written in the Keras format")


def keras_class_name(layer: Layer, strict: bool = True) -> str:
    """The Keras class name graphc writes for ``layer``.

    A class Keras could not read back (see :func:`keras_identity`) is refused, unless ``strict``
    is False: then its own class name is returned, as Keras names custom objects.
    """
    if isinstance(layer, Sequential):
        return "Sequential"
    if isinstance(layer, Model):
        return "Functional"
    return keras_identity(layer)[1] if strict else type(layer).__name__


def lookup(class_name: str, where: str, module: str | None = LAYERS_MODULE, registered_name: str | None = None) -> type:
    """The graphc class for Keras class ``class_name`` (``where`` names the layer in errors).

    ``module`` tells Keras's own classes (``keras.layers``, ``keras.src.ops.numpy``...) from a
    user's (no module, or the user's module): those are found by ``registered_name`` among the
    classes registered with ``register_keras_serializable``.
    """
    keras_module = module is not None and (module == "keras" or module.startswith("keras."))
    if keras_module and module != "keras" and not module.startswith(_KERAS_LAYER_MODULES):
        cls = module_classes().get((module, class_name))
        if cls is None:
            known = sorted(c for m, c in module_classes() if m == module)
            raise UnsupportedKerasError(
                f"Keras class {module}.{class_name} (layer {where!r}) is not supported by graphc"
                + (f"; supported from {module}: {', '.join(known)}" if known else ""))
        return cls
    if not keras_module:
        key = registered_name or class_name
        cls = custom_objects.get_registered_object(key)
        if cls is None:
            raise UnsupportedKerasError(
                f"layer {where!r} is of the custom class {class_name!r} (registered name {key!r}), which graphc "
                "does not know: write it as a subclass of graphc.layers.Layer and register it with "
                "@graphc.saving.register_keras_serializable(package=..., name=...) so that it is known as "
                f"{key!r}, or pass custom_objects={{{key!r}: TheClass}} to load_model")
        return cls
    cls = layer_classes().get(class_name) or custom_objects.get_registered_object(registered_name or class_name)
    if cls is None:
        raise UnsupportedKerasError(
            f"Keras layer class {class_name!r} (layer {where!r}) is not supported by graphc. Supported layer "
            f"classes: {', '.join(supported_keras_layers())}")
    return cls


def is_layer_config(value: Any) -> bool:
    """True for a serialized Keras layer or model (as opposed to an initializer, policy...)."""
    if not isinstance(value, dict) or "class_name" not in value or "config" not in value:
        return False
    module = value.get("module") or ""
    if module:
        return module.startswith(("keras.layers", "keras.src.layers", "keras.src.models")) or \
            value["class_name"] in ("Sequential", "Functional", "Model")
    return value["class_name"] in layer_classes() or value["class_name"] in ("Sequential", "Functional", "Model")


# ---------------------------------------------------------------------- Keras -> graphc
def accepted_arguments(cls: type, own_only: bool = False) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up to Layer.

    With ``own_only``, the arguments of the subclasses only (not those every Layer takes).
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        if klass is Layer and own_only:
            break
        params = inspect.signature(klass.__dict__["__init__"]).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if klass is Layer:
            names.update(klass._allowed_kwargs)
            break
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    names.discard("self")
    return names


def policy_dtype(value: Any, where: str) -> str | None:
    """The dtype name of a Keras dtype policy (dict or string)."""
    if value is None or isinstance(value, str):
        name = value
    elif isinstance(value, dict):
        name = (value.get("config") or {}).get("name")
    else:
        raise KerasFormatError(f"layer {where!r}: cannot read the dtype {value!r}")
    if isinstance(name, str) and name.startswith("mixed_"):
        return "float32"
    return name


def initializer_from_keras(value: Any, where: str) -> Any:
    """A graphc initializer for a Keras initializer (name or serialized dict)."""
    if not isinstance(value, dict):
        return value
    class_name = value.get("class_name")
    try:
        cls = type(initializers.get({"class_name": class_name, "config": {}}))
    except (TypeError, ValueError) as exc:
        raise UnsupportedKerasError(f"layer {where!r}: initializer {class_name!r} is not supported by graphc ({exc})") \
            from None
    config = dict(value.get("config") or {})
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key in list(config):
        if key not in accepted:
            if config[key] not in (None, False):
                raise UnsupportedKerasError(f"layer {where!r}: initializer option {class_name}({key}={config[key]!r}) "
                                            "is not supported by graphc")
            del config[key]
    return cls(**config)


def _is_inert(key: str, value: Any) -> bool:
    if value is None or value is False or (isinstance(value, (list, dict, tuple)) and not value):
        return True
    if key in KERAS_DEFAULTS:
        default = KERAS_DEFAULTS[key]
        if value == default:
            return True
        if isinstance(value, (list, tuple)) and isinstance(default, list) and set(value) == set(default):
            return True
    return False


def config_to_graphc(cls: type, class_name: str, config: dict, where: str,
                     load_layer: Callable[[dict, str], Layer]) -> dict:
    """Constructor arguments for graphc ``cls`` from a Keras layer ``config``."""
    accepted = accepted_arguments(cls)
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "dtype":
            value = policy_dtype(value, where)
        elif is_layer_config(value):
            value = load_layer(value, f"{where}/{key}")
        elif isinstance(value, list) and value and all(is_layer_config(v) for v in value):
            value = [load_layer(v, f"{where}/{key}") for v in value]  # StackedRNNCells' cells
        elif key.endswith("_initializer"):
            value = initializer_from_keras(value, where)
        if key not in accepted:
            if _is_inert(key, value):
                continue
            raise UnsupportedKerasError(f"layer {where!r}: the Keras option {key}={value!r} of {class_name} is not "
                                        "supported by graphc")
        out[key] = value
    return out


# ---------------------------------------------------------------------- graphc -> Keras
def dtype_policy(name: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def plain(value: Any) -> Any:
    """JSON-ready copy of a config value (NumPy scalars and arrays become Python values)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, initializers.Initializer):
        return initializers.serialize(value)
    return value


def plain_argument(value: Any) -> Any:
    """A non-tensor call argument as Keras serializes it: slices, Ellipsis and arrays tagged."""
    if isinstance(value, slice):
        return {"class_name": "__slice__", "config": {"start": plain_argument(value.start),
                                                      "stop": plain_argument(value.stop),
                                                      "step": plain_argument(value.step)}}
    if value is Ellipsis:
        return {"class_name": "__ellipsis__", "config": {}}
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return {"class_name": "__numpy__", "config": {"value": value.tolist(), "dtype": value.dtype.name}}
    return plain(value)


def config_to_keras(layer: Layer, serialize_layer: Callable[[Layer], dict]) -> dict:
    """The config Keras's ``from_config`` takes for graphc ``layer`` (nested layers serialized)."""
    config = dict(layer.get_config())
    if isinstance(layer, InputLayer):
        return plain(config)
    own = accepted_arguments(type(layer), own_only=True)
    for key in _INPUT_SHAPE_ARGS:
        if key not in own:
            config.pop(key, None)
    for key, value in list(config.items()):
        attr = getattr(layer, key, None)
        if isinstance(attr, Layer) and attr is not layer:
            config[key] = serialize_layer(attr)
        elif isinstance(attr, list) and attr and all(isinstance(a, Layer) for a in attr):
            config[key] = [serialize_layer(a) for a in attr]
        elif key == "dtype" and isinstance(value, str):
            config[key] = dtype_policy(value)
        else:
            config[key] = plain(value)
    return config


__all__ = ["layer_classes", "module_classes", "supported_keras_layers", "keras_class_name", "keras_identity",
           "is_operation", "lookup", "config_to_graphc",
           "config_to_keras", "policy_dtype", "initializer_from_keras", "is_layer_config", "dtype_policy",
           "plain", "plain_argument", "LAYERS_MODULE", "FUNCTIONAL_NAMES"]
