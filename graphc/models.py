"""Model classes: ``from graphc.models import Model, Sequential``."""

from graphc.frontend.model import Functional, Model
from graphc.frontend.sequential import Sequential


def load_model(filepath, custom_objects: dict | None = None, compile: bool = True, safe_mode: bool = True) -> Model:
    """A model saved with ``Model.save`` (by graphc or Keras 3) in a ``.keras`` archive."""
    from graphc.saving import load_model as _load_model

    return _load_model(filepath, custom_objects=custom_objects, compile=compile)


__all__ = ["Model", "Sequential", "Functional", "load_model"]
