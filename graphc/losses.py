"""Keras-compatible losses: ``from graphc import losses`` (see :mod:`graphc.training.losses`)."""

from graphc.training.losses import *  # noqa: F403
from graphc.training.losses import __all__  # noqa: F401
