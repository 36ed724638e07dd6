"""Shared test setup: Keras (torch backend) for cross-checks, seeded randomness, fresh names."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from graphc.frontend import state  # noqa: E402


@pytest.fixture
def keras():
    """The Keras 3 module (torch backend); skips only where the keras extra is not installed."""
    return pytest.importorskip("keras")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_names():
    """Each test starts with fresh automatic layer names (dense, dense_1, ...)."""
    state.clear_session()
    yield
