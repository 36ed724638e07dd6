"""Keras-compatible callbacks: ``from graphc import callbacks`` (see :mod:`graphc.training.callbacks`)."""

from graphc.training.callbacks import *  # noqa: F403
from graphc.training.callbacks import __all__  # noqa: F401
