"""Convolutions whose GEMM reads A where it lies (implicit GEMM) against the reference.

A micro-tile of consecutive output pixels in one output row, every window inside the input, is
computed from the input itself (:meth:`Im2colA.direct_tile`): runs of whole kernel rows (one K
block, last axis not dilated), of whole taps (blocks of taps, or a dilated last axis) or of a
channel range of one tap. Tiles across a padding border, across the end of an output row or of an
image, and partial tiles are filled by im2col as before. The cases put both kinds side by side:
channels 1, 3, 7, 17 and up to 512, spatial sizes 1 to 40, strides 1 and 2, same and valid padding,
dilations on either axis, 1-D and 2-D, batch 1 and 3, one and two threads.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graphc.backends.llvm.kernels import gemm
from graphc.backends.llvm.kernels.conv import Geometry, Im2colA
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import assert_matches_reference, load


def _same(kernel, dilation=1):
    span = (kernel - 1) * dilation
    return span // 2, span - span // 2


def _conv(g: Graph, name: str, x_shape, w_shape, rng, **attrs) -> str:
    x = g.add_input(f"{name}/x", TensorType("float32", ("batch", *x_shape)))
    scale = 1.0 / np.sqrt(np.prod(w_shape[:-1]))  # outputs near 1, where float32 sums stay within atol
    w = g.add_constant(f"{name}/w", (scale * rng.standard_normal(w_shape)).astype(np.float32))
    bias = g.add_constant(f"{name}/b", rng.standard_normal(w_shape[-1]).astype(np.float32))
    return OpBuilder(g, layer=name).emit("fused_conv", x, w, bias, has_bias=True, activation="relu", **attrs)


def _conv_cases(g: Graph, rng) -> list[str]:
    s3 = (_same(3), _same(3))
    return [
        # one channel and three (a first layer): runs of whole kernel rows, 12-row and 6-row tiles
        _conv(g, "c1_same", (9, 40, 1), (3, 3, 1, 8), rng, pads=s3),
        _conv(g, "c3_7x7_s2", (23, 37, 3), (7, 7, 3, 64), rng, strides=(2, 2), pads=((3, 3), (3, 3))),
        _conv(g, "c3_3x3_s2_valid", (17, 33, 3), (3, 3, 3, 32), rng, strides=(2, 2)),
        # seven channels, stride 2 along the row only; 17 channels with the rows dilated
        _conv(g, "c7_valid_s12", (9, 29, 7), (3, 3, 7, 17), rng, strides=(1, 2)),
        _conv(g, "c17_5x5_dil_rows", (9, 33, 17), (5, 5, 17, 64), rng, dilations=(2, 1),
              pads=(_same(5, 2), _same(5))),
        # a dilated last axis: runs of one tap each
        _conv(g, "c17_dil_cols", (7, 31, 17), (3, 3, 17, 24), rng, dilations=(1, 2), pads=(_same(3), _same(3, 2))),
        # 1x7 and 7x1 (Inception's factorized convolutions)
        _conv(g, "c17_1x7", (5, 19, 17), (1, 7, 17, 64), rng, pads=((0, 0), _same(7))),
        _conv(g, "c17_7x1", (19, 13, 17), (7, 1, 17, 64), rng, pads=(_same(7), (0, 0))),
        # K beyond one block: blocks of whole taps (256 channels), channel ranges of a tap (512)
        _conv(g, "c256_taps", (5, 20, 256), (3, 3, 256, 20), rng, pads=s3),
        _conv(g, "c512_channels", (3, 16, 512), (2, 2, 512, 8), rng),
        # an 8x8 image in 6-row tiles: the last 4 of 64 rows one at a time
        _conv(g, "px8_1x3", (8, 8, 17), (1, 3, 17, 64), rng, pads=((0, 0), _same(3))),
        # spatial sizes 1, 5 and 7: no tile, or few, reads in place
        _conv(g, "px1", (1, 1, 3), (3, 3, 3, 16), rng, pads=s3),
        _conv(g, "px5", (5, 5, 7), (3, 3, 7, 64), rng, pads=s3),
        _conv(g, "px7_s2", (7, 7, 17), (3, 3, 17, 9), rng, strides=(2, 2), pads=s3),
    ]


def _feeds(g: Graph, batch: int, rng) -> dict[str, np.ndarray]:
    return {n: rng.standard_normal(g.type_of(n).concrete_shape({"batch": batch})).astype(np.float32)
            for n in g.inputs}


@pytest.fixture
def direct_tiles(monkeypatch, tmp_path):
    """The micro-kernels emitted for tiles read in place, as (rows, a_stride), with a fresh build cache."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHC_CONV_WINOGRAD", "0")  # 3x3 stride-1 cases through the implicit GEMM too
    # products of one K block inline the micro-kernel (test_gemm_fused_epilogue): the shared one here
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", "0")
    emitted = []
    real = gemm.direct_tile_function

    def recording(module, rows, nv, vw, stride, a_stride, prefetch=False, last=None):
        emitted.append((rows, a_stride))
        return real(module, rows, nv, vw, stride, a_stride, prefetch, last)

    monkeypatch.setattr(gemm, "direct_tile_function", recording)
    return emitted


@pytest.mark.parametrize("threads", [1, 2])
def test_tiles_read_in_place_beside_filled_ones(direct_tiles, threads):
    rng = np.random.default_rng(10)
    g = Graph("conv_direct")
    g.set_outputs(_conv_cases(g, rng))
    lib = load(g)
    # every case but the last three has tiles read in place (stride C * stride along the row)
    assert len(direct_tiles) >= 10
    assert {a for _, a in direct_tiles} >= {1, 6, 14, 17, 256, 512}
    for batch in (1, 3):
        assert_matches_reference(g, lib, _feeds(g, batch, rng), threads=threads, label=f"batch {batch}")


def test_one_dimensional_convolutions(direct_tiles):
    rng = np.random.default_rng(11)
    g = Graph("conv1d_direct")
    outs = [
        _conv(g, "c5_k3", (40, 5), (3, 5, 16), rng, pads=(_same(3),)),
        _conv(g, "c3_k5_s2_dil2", (57, 3), (5, 3, 64), rng, strides=(2,), dilations=(2,), pads=(_same(5, 2),)),
    ]
    g.set_outputs(outs)
    lib = load(g)
    assert direct_tiles
    for batch in (1, 2):
        assert_matches_reference(g, lib, _feeds(g, batch, rng), label=f"batch {batch}")


def _geometry(in_sp, C, kernel, n_out, strides=None, dilations=None):
    nsp = len(in_sp)
    x = SimpleNamespace(rank=nsp + 2, shape=(1, *in_sp, C))
    out = SimpleNamespace(shape=(1, *in_sp, n_out))
    pads = [(0, 0)] * nsp
    return Geometry(x, out, kernel, strides or (1,) * nsp, dilations or (1,) * nsp, pads)


@pytest.mark.parametrize("in_sp, C, kernel, dilations, kind, length, offsets", [
    # one block: whole kernel rows, three runs of 3 taps x 64 channels, a row of the input apart
    ((10, 20), 64, (3, 3), None, "rows", 192, [0, 1280, 2560]),
    # a dilated row axis keeps runs of kernel rows, two rows of the input apart
    ((10, 20), 8, (2, 3), (2, 1), "rows", 24, [0, 320]),
    # a dilated last axis: one run per tap
    ((4, 6), 2, (1, 3), (1, 2), "taps", 2, [0, 4, 8]),
    # 3x3 over 256 channels: blocks of one tap
    ((7, 7), 256, (3, 3), None, "taps", 256, [256 * (7 * r + c) for r in range(3) for c in range(3)]),
    # 3x3 over 512 channels: two blocks per tap
    ((7, 7), 512, (3, 3), None, "channels", 0, [512 * (7 * r + c) for r in range(3) for c in range(3)]),
])
def test_runs_of_a_block(in_sp, C, kernel, dilations, kind, length, offsets):
    source = Im2colA(None, _geometry(in_sp, C, kernel, 8, dilations=dilations), 16)
    assert source._runs(C * int(np.prod(kernel))) == (kind, length, offsets)
    assert source.direct_stride(6) == C


def test_no_runs_where_blocks_split_a_tap_unevenly():
    """300 channels in blocks of 256: a block ends inside a tap and the next one spans two."""
    source = Im2colA(None, _geometry((5, 6), 300, (3, 3), 8), 16)
    assert source.direct_stride(12) is None
