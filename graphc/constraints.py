"""Keras-compatible weight constraints: ``from graphc import constraints`` (see :mod:`graphc.frontend.constraints`)."""

from graphc.frontend.constraints import *  # noqa: F403
from graphc.frontend.constraints import __all__  # noqa: F401
