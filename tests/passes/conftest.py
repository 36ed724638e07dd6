"""Pass tests run the manager in debug mode: the IR is verified before and after every pass."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _verify_passes(monkeypatch):
    monkeypatch.setenv("GRAPHC_VERIFY_PASSES", "1")
    for var in ("GRAPHC_PRINT_BEFORE", "GRAPHC_PRINT_AFTER", "GRAPHC_DISABLE"):
        monkeypatch.delenv(var, raising=False)
