"""Model classes: ``from graphc.models import Model, Sequential``."""

from graphc.frontend.model import Functional, Model
from graphc.frontend.sequential import Sequential

__all__ = ["Model", "Sequential", "Functional"]
