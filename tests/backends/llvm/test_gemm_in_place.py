"""Dense products whose whole micro-tiles of A are read in place (rows K apart), and weights
prefetched as they stream, against the reference.

Row counts straddle the micro-tile (1, 5, 13, 25 and 1030 rows: none, one and many whole tiles
and a partial one, copied), K from 1 to over several K blocks (each block read at its offset
in the row), with bias, activation and a residual, on one and two threads; then the same under
``GRAPHC_GEMM_CACHES`` with a tiny L2, so that every weight is prefetched and the blocks are small.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.kernels import gemm
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import assert_matches_reference, load

# (M, K, N)
SHAPES = [(1, 7, 17), (5, 3, 33), (13, 17, 7), (25, 1, 64), (25, 300, 65), (13, 1030, 40), (1030, 64, 9),
          (97, 520, 520)]


def _graph(rng) -> Graph:
    g = Graph("dense_in_place")
    ob = OpBuilder(g, layer="dense")
    outs = []
    for i, (m, k, n) in enumerate(SHAPES):
        x = g.add_input(f"a{i}", TensorType("float32", (m, k)))
        w = g.add_constant(f"w{i}", (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
        bias = g.add_constant(f"bias{i}", rng.standard_normal(n).astype(np.float32))
        res = g.add_input(f"r{i}", TensorType("float32", (m, n)))
        outs.append(ob.emit("fused_matmul", x, w, bias, res, has_bias=True, has_residual=True, activation="relu"))
    g.set_outputs(outs)
    return g


def _feeds(g: Graph, rng) -> dict[str, np.ndarray]:
    return {n: rng.standard_normal(g.type_of(n).concrete_shape({})).astype(np.float32) for n in g.inputs}


@pytest.fixture
def in_place_strides(monkeypatch, tmp_path):
    """The row strides of the micro-kernels emitted for tiles read in place, with a fresh build cache."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    # products of one K block inline the micro-kernel (test_gemm_fused_epilogue): the shared one here
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", "0")
    strides = []
    real = gemm.direct_tile_function

    def recording(module, rows, nv, vw, stride, a_stride, prefetch=False, last=None):
        strides.append(a_stride)
        return real(module, rows, nv, vw, stride, a_stride, prefetch, last)

    monkeypatch.setattr(gemm, "direct_tile_function", recording)
    return strides


@pytest.mark.parametrize("threads", [1, 2])
def test_dense_tiles_read_in_place(in_place_strides, threads):
    rng = np.random.default_rng(20)
    g = _graph(rng)
    lib = load(g)
    assert set(in_place_strides) >= {k for _, k, _ in SHAPES}
    assert_matches_reference(g, lib, _feeds(g, rng), threads=threads)


def test_every_weight_prefetched_with_a_tiny_l2(in_place_strides, monkeypatch):
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l1=4K,l2=16K,l3=64K")
    rng = np.random.default_rng(21)
    g = _graph(rng)
    lib = load(g)
    assert_matches_reference(g, lib, _feeds(g, rng), threads=2)
