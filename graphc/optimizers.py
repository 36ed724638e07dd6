"""Keras-compatible optimizers: ``from graphc import optimizers`` (see :mod:`graphc.training.optimizers`)."""

from graphc.training.optimizers import *  # noqa: F403
from graphc.training.optimizers import __all__  # noqa: F401
