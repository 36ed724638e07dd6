"""The GEMM's micro-kernel is one function of the module, called by every product with the same tile.

Dense products read their rows where they lie, K apart: products of the same K (and different
epilogues and row counts) share one definition of the register-blocked micro-kernel, and products
of any K one of the single-row kernel; copied tiles have few row strides
(:func:`graphc.backends.llvm.kernels.gemm.tile_row_stride`). All still compute their products.
"""

from __future__ import annotations

import re

import numpy as np

from graphc.backends.llvm import codegen
from graphc.backends.llvm.kernels.gemm import EDGE_ROWS, PANEL_GROUP, TILE_PAD, tile_row_stride
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import optimize
from tests.backends.llvm.helpers import assert_matches_reference, load


def _two_products(rng) -> Graph:
    g = Graph("shared_micro")
    ob = OpBuilder(g)
    outs = []
    for i, (m, k, n) in enumerate([(29, 37, 64), (7, 91, 64), (50, 37, 64)]):
        x = g.add_input(f"a{i}", TensorType("float32", (m, k)))
        w = g.add_constant(f"w{i}", rng.standard_normal((k, n)).astype(np.float32))
        y = ob.emit("matmul", x, w)
        if i:
            bias = g.add_constant(f"bias{i}", rng.standard_normal(n).astype(np.float32))
            y = ob.emit("relu", ob.emit("add", y, bias))
        outs.append(y)
    g.set_outputs(outs)
    return g


def test_products_share_micro_kernels(monkeypatch, rng):
    # products of one K block inline the micro-kernel to apply the epilogue from its registers
    # (test_gemm_fused_epilogue); those of several, as these are with that off, share it
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", "0")
    texts: list[str] = []
    compile_ir = codegen.compile_ir

    def keep_text(text, *args, **kwargs):
        texts.append(text)
        return compile_ir(text, *args, **kwargs)

    monkeypatch.setattr(codegen, "compile_ir", keep_text)
    graph = optimize(_two_products(rng), 2)
    lib = load(graph, "shared_micro", cache=False)
    (text,) = texts
    kernels = re.findall(r"^define .*@\"?(k_\w+)", text, re.MULTILINE)
    assert len([k for k in kernels if k.startswith("k_gemm")]) == 3, kernels
    every_tile = re.findall(r"^define .*@\"?(gemm_(?:tile|direct)_\w+)", text, re.MULTILINE)
    edge = [t for t in every_tile if t.startswith(f"gemm_tile_{EDGE_ROWS}x")]
    assert len(edge) == 1, every_tile  # the row tails' tiles of EDGE_ROWS: one, shared
    tiles = [t for t in every_tile if t not in edge]
    rows = re.findall(r"^define .*@\"?(gemm_row_\w+)", text, re.MULTILINE)
    assert len(tiles) == 2 and {t.rsplit("_a", 1)[1] for t in tiles} == {"37", "91"}, tiles  # one per K
    # the single rows: one function over a group of PANEL_GROUP panels, one over a panel, each shared
    assert sorted(r.split('_')[2] for r in rows) == sorted(['1x2', f'{PANEL_GROUP}x2']), rows
    k37 = next(t for t in tiles if t.endswith("_a37"))
    assert len(re.findall(rf"call void @\"?{k37}\b", text)) == 2  # once in each K = 37 product's kernel
    feeds = {name: rng.standard_normal(graph.type_of(name).concrete_shape({})).astype(np.float32)
             for name in graph.inputs}
    for threads in (1, 2):
        assert_matches_reference(graph, lib, feeds, threads=threads)


def test_tile_strides_come_in_few_sizes():
    # copied rows: the cache block's stride whatever the K block
    assert {tile_row_stride(kb, 384) for kb in (1, 37, 91, 384)} == {384 + TILE_PAD}
    # rows computed by their source (im2col): rounded up, never below the block plus a cache line
    strides = {tile_row_stride(kb) for kb in range(1, 1281)}
    assert len(strides) <= 20
    assert all(tile_row_stride(kb) >= kb + TILE_PAD and tile_row_stride(kb) % 16 == 0 for kb in range(1, 1281))
