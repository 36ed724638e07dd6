"""Custom classes known by name: ``register_keras_serializable`` and ``custom_objects=``.

Keras writes a class that is not part of Keras with ``"module": null`` and a
``registered_name``: ``"package>Name"`` for a class registered with
``@register_keras_serializable(package, name)``, else the class name. Reading such a file needs
the class: from the ``custom_objects`` given to ``load_model`` (by registered name or class
name), or from this registry.
"""

from __future__ import annotations

from collections.abc import Callable

_BY_NAME: dict[str, type] = {}
_NAME_OF: dict[type, str] = {}


def register_keras_serializable(package: str = "Custom", name: str | None = None) -> Callable[[type], type]:
    """Class decorator: files naming ``"package>name"`` (``name`` defaults to the class name) load it."""
    if not isinstance(package, str) or ">" in package:
        raise ValueError(f"package must be a string without '>', got {package!r}")

    def decorator(cls: type) -> type:
        if not isinstance(cls, type):
            raise TypeError(f"register_keras_serializable registers classes, got {cls!r}")
        if not hasattr(cls, "get_config"):
            raise ValueError(f"cannot register {cls.__name__}: it has no get_config() method")
        key = f"{package}>{name or cls.__name__}"
        _BY_NAME[key] = cls
        _NAME_OF[cls] = key
        return cls

    return decorator


def get_registered_name(cls: type) -> str:
    """The name Keras files use for ``cls``: its registered ``"package>name"``, else its class name."""
    return _NAME_OF.get(cls, cls.__name__)


def is_registered(cls: type) -> bool:
    return cls in _NAME_OF


def get_registered_object(name: str, custom_objects: dict | None = None) -> type | None:
    """The class registered (or given in ``custom_objects``) under ``name``, or None."""
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    return _BY_NAME.get(name)


__all__ = ["register_keras_serializable", "get_registered_name", "get_registered_object", "is_registered"]
