"""Keras-compatible metrics: ``from graphc import metrics`` (see :mod:`graphc.training.metrics`)."""

from graphc.training.metrics import *  # noqa: F403
from graphc.training.metrics import __all__  # noqa: F401
