"""Keras-compatible regularizers: ``from graphc import regularizers`` (see :mod:`graphc.frontend.regularizers`)."""

from graphc.frontend.regularizers import *  # noqa: F403
from graphc.frontend.regularizers import __all__  # noqa: F401
