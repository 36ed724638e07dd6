"""Shared test setup: Keras (torch backend) for cross-checks, seeded randomness, fresh names, and a
build cache of the session's own (never the user's ~/.cache/graphc)."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")
# The suite's models (and those of the processes it starts) run fit, evaluate and predict on the reference
# unless a test picks native code (graphc.build, compile(backend="native")): compiling each natively would
# make the suite much slower. tests/training/test_default_backend.py covers the default, "auto".
os.environ.setdefault("GRAPHC_BACKEND", "reference")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from graphc.frontend import state  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _session_build_cache():
    """Native builds of this session go to a temporary cache, removed at the end; an explicit
    $GRAPHC_CACHE_DIR (a developer's warm cache for repeated runs) is respected."""
    if os.environ.get("GRAPHC_CACHE_DIR"):
        yield os.environ["GRAPHC_CACHE_DIR"]
        return
    directory = tempfile.mkdtemp(prefix="graphc-test-cache-")
    os.environ["GRAPHC_CACHE_DIR"] = directory
    # The suite builds the Keras applications with their weights (VGG16's library alone holds 1 GB): under
    # the default 2G limit, builds a module holds for minutes (the C-ABI tests compile C against one) were
    # evicted by other workers' builds. The directory is removed at the end, so it may grow for one session.
    limit_was_set = "GRAPHC_CACHE_SIZE" in os.environ
    os.environ.setdefault("GRAPHC_CACHE_SIZE", "32G")
    try:
        yield directory
    finally:
        os.environ.pop("GRAPHC_CACHE_DIR", None)
        if not limit_was_set:
            os.environ.pop("GRAPHC_CACHE_SIZE", None)
        shutil.rmtree(directory, ignore_errors=True)


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
