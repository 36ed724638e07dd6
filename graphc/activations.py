"""Keras's activation functions: ``from graphc import activations`` (``activations.hard_silu(x)``...).

Each function applies the activation to a symbolic tensor (adding a layer to the model) or to
an array (computed at once), with Keras's arguments; ``get`` gives an activation's canonical
name. Every name also works as ``activation=`` on the layers that take one.
"""

from graphc.frontend import activations as _activations
from graphc.frontend.activations import NAMES, get

__all__ = ["NAMES", "get", *NAMES]

globals().update({_name: getattr(_activations, _name) for _name in NAMES})
