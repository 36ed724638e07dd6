"""Process-wide front-end state: automatic layer names and the random generator.

Keras keeps the same two things global: per-prefix name counters (``dense``, ``dense_1``)
and the seed used by initializers. ``clear_session`` resets the names (``graphc.utils.clear_session``
also collects garbage, as Keras's does); ``set_random_seed`` sets the seed.
"""

from __future__ import annotations

import random
import re

import numpy as np

_name_counts: dict[str, int] = {}
_rng = np.random.default_rng()


def to_snake_case(name: str) -> str:
    """Keras's class-name-to-layer-name rule: ``Conv2D`` -> ``conv2d``, ``LSTM`` -> ``lstm``."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()
    return s


def unique_name(prefix: str) -> str:
    """``prefix`` the first time, then ``prefix_1``, ``prefix_2``..."""
    n = _name_counts.get(prefix, 0)
    _name_counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def rng() -> np.random.Generator:
    return _rng


def set_random_seed(seed: int) -> None:
    """Seed graphc's initializers (and Python's and NumPy's global generators, as Keras does)."""
    global _rng
    _rng = np.random.default_rng(seed)
    random.seed(seed)
    np.random.seed(seed)


def clear_session() -> None:
    """Reset automatic names (the next Dense is ``dense`` again)."""
    _name_counts.clear()
