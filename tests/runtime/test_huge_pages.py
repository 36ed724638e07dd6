"""Transparent huge pages for an instance's large blocks (``gc_options_t.huge_pages``): the default
allocator advises blocks of 2 MiB and more, ``huge_pages=False`` does not, and both compute the same."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.llvm import compile_library
from graphc.bench import transparent_huge_pages
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library

ROOT = Path(__file__).resolve().parents[2]
WEIGHT = np.random.default_rng(3).standard_normal((1024, 1024)).astype(np.float32)


def _advised_bytes(flag: str) -> int:
    """Bytes of this process's mappings with ``flag`` among their VmFlags (``hg``: advised as huge pages,
    ``nh``: advised against them)."""
    total, size = 0, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line.startswith("Size:"):
            size = int(line.split()[1]) * 1024
        elif line.startswith("VmFlags:") and flag in line.split()[1:]:
            total += size
    return total


# In a fresh process: freed blocks go back to the heap with their advice, so a process that made
# instances before could hand the next one memory advised either way already.
ADVICE_PROBE = """
import sys
import numpy as np
from graphc.runtime import Library
from tests.runtime.test_huge_pages import _advised_bytes
lib = Library(sys.argv[1], sys.argv[2])
x = np.ones((1, 1024), np.float32)
counts = [(_advised_bytes("hg"), _advised_bytes("nh"))]
for huge in (False, True):
    inst = lib.instance(1, huge_pages=huge)
    inst.run([x])
    counts.append((_advised_bytes("hg"), _advised_bytes("nh")))
print(counts)
"""


@pytest.fixture(scope="module")
def dense_files(tmp_path_factory, monkeypatch_module):
    """A product by a 1024 x 1024 weight: 4 MiB of packed panels per instance."""
    monkeypatch_module.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    g = Graph("huge_dense")
    x = g.add_input("x", TensorType("float32", ("batch", 1024)))
    w = g.add_constant("w", WEIGHT)
    g.set_outputs([OpBuilder(g).emit("matmul", x, w)])
    return compile_library(g, cache=False)


@pytest.fixture(scope="module")
def dense_library(dense_files) -> Library:
    return Library(dense_files.shared, dense_files.symbol)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_both_ways_compute_the_same(dense_library, rows):
    x = np.random.default_rng(rows).standard_normal((rows, 1024)).astype(np.float32)
    huge, small = dense_library.instance(1), dense_library.instance(1, huge_pages=False)
    try:
        a, b = huge.run([x])[0], small.run([x])[0]
    finally:
        huge.close()
        small.close()
    assert a.tobytes() == b.tobytes()
    want = x.astype(np.float64) @ WEIGHT.astype(np.float64)
    np.testing.assert_allclose(a, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.skipif(transparent_huge_pages() == "unknown",
                    reason="transparent huge pages are a Linux kernel feature, absent here")
def test_instances_advise_their_packed_weights(dense_files):
    """The 4 MiB of packed panels: advised against huge pages with huge_pages=False, for them by default."""
    out = subprocess.run([sys.executable, "-c", ADVICE_PROBE, str(dense_files.shared), dense_files.symbol],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    (hg0, nh0), (hg1, nh1), (hg2, nh2) = ast.literal_eval(out.strip())
    assert hg1 == hg0 and nh1 - nh0 >= 4 << 20  # the 4 KiB instance
    assert hg2 - hg1 >= 4 << 20 and nh2 == nh1  # the default instance
