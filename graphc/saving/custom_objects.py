"""Custom classes and functions known by name: ``register_keras_serializable`` and ``custom_objects=``.

Keras writes a class that is not part of Keras with ``"module": null`` and a
``registered_name``: ``"package>Name"`` for a class registered with
``@register_keras_serializable(package, name)``, else the class name; a function (a custom loss
or metric in a compile configuration) as ``{"class_name": "function", "config": name}`` with the
same naming. Reading such a file needs the object: from the ``custom_objects`` given to
``load_model`` (by registered name or plain name; :func:`custom_object_scope` makes them known
while the file is read), or from this registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

_BY_NAME: dict[str, Any] = {}
_NAME_OF: dict[Any, str] = {}
_SCOPES: list[dict] = []


def register_keras_serializable(package: str = "Custom", name: str | None = None) -> Callable[[Any], Any]:
    """Class or function decorator: files naming ``"package>name"`` (``name`` defaults to the class or
    function name) load it."""
    if not isinstance(package, str) or ">" in package:
        raise ValueError(f"package must be a string without '>', got {package!r}")

    def decorator(cls: Any) -> Any:
        if not isinstance(cls, type):
            if not callable(cls) or not hasattr(cls, "__name__"):
                raise TypeError(f"register_keras_serializable registers classes and functions, got {cls!r}")
        elif not hasattr(cls, "get_config"):
            raise ValueError(f"cannot register {cls.__name__}: it has no get_config() method")
        key = f"{package}>{name or cls.__name__}"
        _BY_NAME[key] = cls
        _NAME_OF[cls] = key
        return cls

    return decorator


def get_registered_name(cls: Any) -> str:
    """The name Keras files use for ``cls``: its registered ``"package>name"``, else its class (or function)
    name."""
    return _NAME_OF.get(cls, cls.__name__)


def is_registered(cls: Any) -> bool:
    return cls in _NAME_OF


def get_registered_object(name: str, custom_objects: dict | None = None) -> Any:
    """The class or function given in ``custom_objects``, in an active :func:`custom_object_scope` or
    registered under ``name``, or None."""
    for objects in [custom_objects or {}, *reversed(_SCOPES)]:
        if name in objects:
            return objects[name]
    return _BY_NAME.get(name)


def active_objects() -> dict:
    """The objects the active :func:`custom_object_scope` blocks make known (inner ones win), to be known
    again later: a compiled model resolves its metrics on its first batch."""
    merged: dict = {}
    for objects in _SCOPES:
        merged.update(objects)
    return merged


@contextlib.contextmanager
def custom_object_scope(custom_objects: dict | None) -> Iterator[None]:
    """Within the block, ``custom_objects`` (name -> class or function) are known by name (Keras's
    ``keras.saving.custom_object_scope``)."""
    _SCOPES.append(dict(custom_objects or {}))
    try:
        yield
    finally:
        _SCOPES.pop()


__all__ = ["register_keras_serializable", "get_registered_name", "get_registered_object", "is_registered",
           "custom_object_scope", "active_objects"]
