"""The packed GEMM (A and B packed, blocked for the caches) on odd shapes, transposed operands and
small caches, and the block sizes derived from the caches.

Shapes straddle the micro-tile (MR rows) and panel (NR columns) widths: 1, 3, 7, 17, 255, 257
and K over several blocks. Each product runs as a Dense layer's product (weights packed once,
epilogue fused) and as a product of two run-time operands, on one and two threads. With
``GRAPHC_GEMM_CACHES`` set to tiny caches, the same products cross many K blocks, row blocks
and column chunks.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.kernels import gemm, gemm_blocking
from graphc.backends.llvm.kernels.gemm_blocking import (
    CacheSizes,
    blocking,
    parse_caches,
    read_sysfs_caches,
    runtime_blocks,
)
from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import optimize
from tests.backends.llvm.helpers import load, run_native

# (M, K, N)
SHAPES = [(1, 1, 1), (3, 7, 17), (17, 3, 7), (7, 17, 3), (255, 257, 17), (257, 17, 255), (17, 255, 257),
          (1, 600, 33), (13, 1000, 65), (97, 520, 97)]


def _dense_graph(shapes, rng, *, epilogue: bool) -> Graph:
    g = Graph("packed_dense")
    ob = OpBuilder(g)
    outs = []
    for i, (m, k, n) in enumerate(shapes):
        x = g.add_input(f"a{i}", TensorType("float32", (m, k)))
        w = g.add_constant(f"w{i}", rng.standard_normal((k, n)).astype(np.float32))
        y = ob.emit("matmul", x, w)
        if epilogue:
            bias = g.add_constant(f"bias{i}", rng.standard_normal(n).astype(np.float32))
            y = ob.emit("relu", ob.emit("add", y, bias))
        outs.append(y)
    g.set_outputs(outs)
    return g


def _runtime_graph(shapes, *, transpose_a: bool = False, transpose_b: bool = False) -> Graph:
    g = Graph("packed_runtime")
    ob = OpBuilder(g)
    outs = []
    for i, (m, k, n) in enumerate(shapes):
        x = g.add_input(f"a{i}", TensorType("float32", (k, m) if transpose_a else (m, k)))
        y = g.add_input(f"b{i}", TensorType("float32", (n, k) if transpose_b else (k, n)))
        if transpose_a:
            x = ob.emit("transpose", x, perm=(1, 0))
        if transpose_b:
            y = ob.emit("transpose", y, perm=(1, 0))
        outs.append(ob.emit("matmul", x, y))
    g.set_outputs(outs)
    return g


def _feeds(graph: Graph, rng) -> dict[str, np.ndarray]:
    return {name: rng.standard_normal(graph.type_of(name).concrete_shape({})).astype(np.float32)
            for name in graph.inputs}


def _check(graph: Graph, lib, feeds, threads: int, label: str) -> None:
    want = reference_run(graph, feeds)
    got = run_native(lib, feeds, threads)
    for name, g in zip(graph.outputs, got):
        w = np.asarray(want[name], dtype=np.float64)
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{label}: {name}")


@pytest.mark.parametrize("epilogue", [False, True])
def test_dense_products_of_odd_shapes(epilogue, rng):
    graph = _dense_graph(SHAPES, rng, epilogue=epilogue)
    compiled = optimize(graph, 2)
    lib = load(compiled, f"packed_dense_{int(epilogue)}")
    feeds = _feeds(graph, rng)
    for threads in (1, 2):
        _check(graph, lib, feeds, threads, f"dense, {threads} threads")


@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_run_time_products_of_odd_shapes_and_transposed_operands(transpose_a, transpose_b, rng):
    graph = _runtime_graph(SHAPES, transpose_a=transpose_a, transpose_b=transpose_b)
    lib = load(graph, f"packed_runtime_{int(transpose_a)}{int(transpose_b)}")
    feeds = _feeds(graph, rng)
    for threads in (1, 2):
        _check(graph, lib, feeds, threads, f"run time, transposed a={transpose_a} b={transpose_b}, {threads} threads")


@pytest.mark.parametrize("items", ["", "ceil"])
def test_few_row_tiles_split_over_columns_on_several_threads(items, monkeypatch, rng):
    """Products of a few micro-tiles and a partial one (7x7, 8x8 and 14x14 pixels), whose columns
    the threads share: every split of rows and panels (gemm_items) on 1, 2, 3 and 4 threads, and
    the earlier split kept for measurements (``GRAPHC_GEMM_ITEMS=ceil``)."""
    monkeypatch.setenv("GRAPHC_GEMM_ITEMS", items)
    shapes = [(49, 64, 320), (64, 33, 200), (196, 17, 100), (25, 8, 40), (13, 40, 330)]
    dense = _dense_graph(shapes, rng, epilogue=True)
    runtime = _runtime_graph(shapes)
    for graph, name, compiled in ((dense, "few_tiles_dense", optimize(dense, 2)),
                                  (runtime, "few_tiles_runtime", runtime)):
        lib = load(compiled, f"{name}_{items}")
        feeds = _feeds(graph, rng)
        for threads in (1, 2, 3, 4):
            _check(graph, lib, feeds, threads, f"{name}, {threads} threads")


def test_rows_per_tile_fit_the_rows_of_one_sample(monkeypatch):
    """MR is 12, 8 or 7, whichever leaves fewest rows of one sample past the last whole tile (the
    larger on a tie); free dims count as 1; targets of 16 registers and the measuring switch keep
    micro_tile's."""
    monkeypatch.delenv("GRAPHC_GEMM_TILE", raising=False)
    monkeypatch.delenv(gemm.ROWS_ENV, raising=False)
    rows = {M: gemm.tile_for_rows(M, 16, 32)[0]
            for M in (1, 6, 7, 8, 10, 12, 16, 49, 128, 196, 289, 1225, 3136, 12544)}
    assert rows == {1: 12, 6: 12, 7: 7, 8: 8, 10: 8, 12: 12, 16: 8, 49: 7, 128: 8, 196: 7, 289: 12, 1225: 7,
                    3136: 8, 12544: 8}
    assert gemm.tile_for_rows("(N * 128)", 16, 32) == (8, 2)
    assert gemm.tile_for_rows("(N * 196)", 16, 32) == (7, 2)
    assert gemm.tile_for_rows("(N * 289)", 16, 32) == (12, 2)
    assert gemm.tile_for_rows(128, 8, 16) == (6, 2)
    monkeypatch.setenv(gemm.ROWS_ENV, "fixed")
    assert gemm.tile_for_rows(128, 16, 32) == (12, 2)
    monkeypatch.setenv(gemm.ROWS_ENV, "8")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_ROWS"):
        gemm.tile_for_rows(128, 16, 32)


@pytest.mark.parametrize("rows", ["", "fixed"])
def test_products_on_eight_and_seven_row_tiles(rows, monkeypatch, rng):
    """Products whose rows 8- and 7-row tiles fit (8, 16, 40, 128, 136; 7, 49, 196 rows; 17 beside
    them), dense with an epilogue and of run-time operands (batched: 4 heads of 128 rows, as
    attention's), on 1, 2 and 3 threads, equal the reference with the rule and with 12-row tiles."""
    monkeypatch.setenv(gemm.ROWS_ENV, rows)
    shapes = [(8, 33, 40), (16, 5, 17), (40, 64, 100), (128, 256, 96), (136, 17, 33), (7, 9, 3), (49, 70, 33),
              (196, 24, 65), (17, 40, 65)]
    dense = _dense_graph(shapes, rng, epilogue=True)
    runtime = _runtime_graph(shapes)
    g = Graph("eight_row_heads")
    ob = OpBuilder(g)
    q = g.add_input("q", TensorType("float32", (4, 128, 64)))
    kt = g.add_input("kt", TensorType("float32", (4, 64, 128)))
    g.set_outputs([ob.emit("matmul", q, kt)])
    for graph, name, compiled in ((dense, "eight_dense", optimize(dense, 2)), (runtime, "eight_runtime", runtime),
                                  (g, "eight_heads", g)):
        lib = load(compiled, f"{name}_{rows}", cache=False)
        feeds = _feeds(graph, rng)
        for threads in (1, 2, 3):
            _check(graph, lib, feeds, threads, f"{name}, rows rule {rows!r}, {threads} threads")


def test_tiny_caches_cross_many_blocks_and_chunks(monkeypatch, rng):
    """Caches of 4 KiB / 32 KiB / 64 KiB: K blocks of 64, row blocks of a few tiles, chunks of a
    few panels, on both kernels (the build cache is bypassed: the sizes are not in its key)."""
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l1=4K,l2=32K,l3=64K")
    shapes = [(255, 257, 17), (17, 255, 257), (97, 520, 97), (1, 600, 33), (257, 300, 255)]
    dense = _dense_graph(shapes, rng, epilogue=True)
    runtime = _runtime_graph(shapes, transpose_b=True)
    for graph, name in ((optimize(dense, 2), "tiny_dense"), (runtime, "tiny_runtime")):
        lib = load(graph, name, cache=False)
        feeds = _feeds(graph, rng)
        for threads in (1, 2):
            _check(graph, lib, feeds, threads, f"{name}, {threads} threads")


@pytest.mark.parametrize("order", ["0", "1"])
@pytest.mark.parametrize("caches", ["", "l1=4K,l2=32K,l3=64K"])
def test_dense_products_in_either_loop_order(order, caches, monkeypatch, rng):
    """A packed weight's K blocks inside the row blocks (``GRAPHC_GEMM_K_OUTER=0``) or outside them
    (``1``: a group of rows per item, its row blocks each running over a chunk's K block, partial sums
    in C), with an epilogue, on 1, 2 and 3 threads. Under the machine's caches K up to 2048 is one block
    (the epilogue fused into the micro-kernel's registers); under tiny ones, every product crosses many
    K blocks, row blocks and chunks of one panel."""
    monkeypatch.setenv("GRAPHC_GEMM_K_OUTER", order)
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", caches)
    shapes = SHAPES + [(61, 2100, 40), (300, 70, 130)]
    graph = _dense_graph(shapes, rng, epilogue=True)
    lib = load(optimize(graph, 2), f"dense_order_{order}_{bool(caches)}", cache=False)
    feeds = _feeds(graph, rng)
    for threads in (1, 2, 3):
        _check(graph, lib, feeds, threads, f"K blocks outside={order}, caches {caches!r}, {threads} threads")


@pytest.mark.parametrize("mode", ["auto", "every", "0"])
@pytest.mark.parametrize("fused", ["0", "1"])
def test_streamed_weights_prefetch_from_the_first_tile_of_a_row_block(mode, fused, monkeypatch, rng):
    """Weights of a quarter of L2 or more prefetch the next panel: from the first micro-tile of each row
    block (``auto``), from every tile (``every``) or not at all (``0``); each equals the reference, with
    the epilogue fused into the registers or not, on row blocks of several tiles, with and without a
    row tail, on 1 and 2 threads."""
    monkeypatch.setenv("GRAPHC_GEMM_PREFETCH", mode)
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", fused)
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l2=64K")  # 16 KiB of weights stream
    asked = []
    for name in ("tile_compute", "tile_function"):
        real = getattr(gemm, name)
        monkeypatch.setattr(gemm, name, lambda *a, _real=real, _name=name, **kw: asked.append(
            bool(kw.get("prefetch") if _name == "tile_compute" else a[6])) or _real(*a, **kw))
    graph = _dense_graph([(97, 130, 70), (61, 2100, 40), (7, 300, 33)], rng, epilogue=True)
    lib = load(optimize(graph, 2), f"prefetch_{mode}_{fused}", cache=False)
    feeds = _feeds(graph, rng)
    for threads in (1, 2):
        _check(graph, lib, feeds, threads, f"prefetch {mode}, fused {fused}, {threads} threads")
    if mode == "0":
        assert not any(asked)
    elif mode == "every":
        assert all(asked)
    else:  # the first tile of a row block with, the others without
        assert any(asked) and not all(asked)
    monkeypatch.setenv("GRAPHC_GEMM_PREFETCH", "always")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_PREFETCH"):
        load(optimize(graph, 2), "prefetch_bad", cache=False)


def test_weights_beyond_half_of_l3_run_their_k_blocks_outside(monkeypatch):
    """By default only a weight of half of L3 or more takes the K-outer order; the switch forces
    either order and refuses other values."""
    monkeypatch.delenv("GRAPHC_GEMM_K_OUTER", raising=False)
    b = blocking(CacheSizes(l1=32 << 10, l2=1 << 20, l3=32 << 20), 12, 32)
    assert gemm.k_blocks_outside(16 << 20, b) and not gemm.k_blocks_outside((16 << 20) - 4, b)
    monkeypatch.setenv("GRAPHC_GEMM_K_OUTER", "0")
    assert not gemm.k_blocks_outside(1 << 30, b)
    monkeypatch.setenv("GRAPHC_GEMM_K_OUTER", "1")
    assert gemm.k_blocks_outside(4, b)
    monkeypatch.setenv("GRAPHC_GEMM_K_OUTER", "yes")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_K_OUTER"):
        gemm.k_blocks_outside(4, b)


def test_block_sizes_follow_the_caches():
    # AVX-512, 12 x 32 tile, 32 KiB L1 / 1 MiB L2 (Zen 4): the B panel takes twice L1; B packed at run
    # time is packed in K blocks of 2048 (two 12-row tiles of A in a quarter of L2 would allow 2704),
    # at most an eighth of L3 at once
    b = blocking(CacheSizes(l1=32 << 10, l2=1 << 20, l3=32 << 20), 12, 32)
    assert b.kc == 512 and b.kc * 32 * 4 == 2 * (32 << 10) and b.kc_packed == 2048 and b.b_block == 4 << 20
    # ... evened out where K is known, with as many rows of A as take a quarter of L2 at that depth
    assert runtime_blocks(b, 4095, 12) == (2048, 24) and runtime_blocks(b, 3000, 12) == (1500, 36)
    assert runtime_blocks(b, 64, 12) == (64, 816) and runtime_blocks(b, "k", 12) == (2048, 24)
    # 48 KiB L1 / 2 MiB L2 (a Sapphire Rapids Xeon): twice L1 is above the largest K block
    b = blocking(CacheSizes(l1=48 << 10, l2=2 << 20, l3=32 << 20), 12, 32)
    assert b.kc == 512 and b.kc_packed == 2048
    assert b.mc % 12 == 0 and b.mc * (b.kc + 16) * 4 <= 256 << 10 < (b.mc + 12) * (b.kc + 16) * 4
    assert b.nc % 32 == 0 and b.nc * b.kc * 4 <= 16 << 20
    # 256 KiB L2: two tiles of A in a quarter of it at 656 deep
    b = blocking(CacheSizes(l1=32 << 10, l2=256 << 10, l3=8 << 20), 12, 32)
    assert b.kc_packed == 656 and 2 * 12 * (656 + 16) * 4 <= 64 << 10 and b.b_block == 1 << 20
    # AVX2, 6 x 16 tile, 32 KiB L1 / 512 KiB L2 (Zen 3)
    b = blocking(CacheSizes(l1=32 << 10, l2=512 << 10, l3=32 << 20), 6, 16)
    assert (b.kc, b.mc % 6) == (512, 0) and b.mc * (b.kc + 16) * 4 <= 64 << 10
    # never below one micro-tile or one panel, never a K block below 64
    b = blocking(CacheSizes(l1=1024, l2=1024, l3=1024), 12, 32)
    assert (b.kc, b.mc, b.nc) == (64, 12, 32)


def test_cache_sizes_from_sysfs_and_the_environment(tmp_path, monkeypatch):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "64K"), (2, "Unified", "2048K"),
                                             (3, "Unified", "491520K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
        (d / "ways_of_associativity").write_text("12\n" if kind == "Data" else "8\n")
    assert read_sysfs_caches(tmp_path) == CacheSizes(l1=48 << 10, l2=2 << 20, l3=480 << 20, l1_ways=12)
    (tmp_path / "index0" / "ways_of_associativity").write_text("0\n")  # unknown: the default
    assert read_sysfs_caches(tmp_path).l1_ways == gemm_blocking.DEFAULT_CACHES.l1_ways
    assert read_sysfs_caches(tmp_path / "absent") is None
    assert parse_caches("l2=1M, l1=32K") == CacheSizes(l1=32 << 10, l2=1 << 20, l3=gemm_blocking.DEFAULT_CACHES.l3)
    assert parse_caches("l1_ways=12").l1_ways == 12
    with pytest.raises(ValueError, match="l4=1M"):
        parse_caches("l4=1M")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_CACHES l1 must be a size such as 500M or 2G, got 'lots'"):
        parse_caches("l1=lots")
    for bad in ("l1_ways=0", "l1_ways=8K", "l1_ways=-2"):
        with pytest.raises(ValueError, match="l1_ways must be a positive whole number"):
            parse_caches(bad)
    # a cross target gets the defaults, the host its own caches; the environment overrides both
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l1=16K")
    assert gemm_blocking.caches_for(False).l1 == 16 << 10
    assert gemm_blocking.caches_for(True).l1 == 16 << 10
    monkeypatch.delenv("GRAPHC_GEMM_CACHES")
    assert gemm_blocking.caches_for(False) == gemm_blocking.DEFAULT_CACHES


def test_tail_lanes():
    assert [gemm.tail_lanes(n, 16) for n in (32, 16, 24, 17, 8, 1, 25, 31, 9)] == [16, 16, 8, 8, 8, 8, 16, 16, 16]
    assert [gemm.tail_lanes(n, 8) for n in (8, 12, 4, 5, 1)] == [8, 4, 4, 8, 4]
    assert gemm.tail_lanes(3, 4) == 4  # 128-bit vectors are not split


@pytest.mark.parametrize("cpu", [None, "x86-64-v3"])
def test_half_width_tails(cpu, monkeypatch, tmp_path, rng):
    """Panels whose last columns fit half a vector (24 of 32 columns on 16-lane vectors, 4 of 8 on AVX2)
    are computed by micro-kernels with a half-width last vector: the products still equal the
    reference, on full tiles and on the rows left over, with and without an epilogue."""
    from graphc.backends.llvm.target import host_target

    if cpu is not None and "+avx2" not in host_target().features.split(","):
        pytest.skip("the host cannot run AVX2 code")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    # the shared micro-kernels, recorded here; the inlined ones of the fused epilogue compute the
    # same bits (test_gemm_fused_epilogue, whose products have such tails)
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", "0")
    lasts = []
    def recorder(real):
        def recording(module, rows, nv, vw, stride, a_stride, prefetch=False, last=None):
            lasts.append((vw, last))
            return real(module, rows, nv, vw, stride, a_stride, prefetch, last)
        return recording

    for name in ("tile_function", "direct_tile_function"):  # rows copied or read where they lie
        monkeypatch.setattr(gemm, name, recorder(getattr(gemm, name)))
    shapes = [(61, 37, 24), (29, 144, 40), (25, 16, 12), (50, 9, 4), (13, 30, 20)]
    for epilogue in (False, True):
        graph = _dense_graph(shapes, rng, epilogue=epilogue)
        lib = load(optimize(graph, 2), f"half_tails_{epilogue:d}", **({"cpu": cpu} if cpu else {}))
        feeds = _feeds(graph, rng)
        for threads in (1, 2):
            _check(graph, lib, feeds, threads, f"cpu {cpu}, epilogue {epilogue}, {threads} threads")
    assert any(last is not None and last < vw for vw, last in lasts), lasts


def test_rows_that_share_an_l1_set():
    """12 rows 4 KiB apart fill one set of a 32 KiB L1: more than its 8 ways, not more than a 48 KiB
    L1's 12; 2 KiB apart they take two sets (6 rows each); rows a line apart never share one."""
    zen4 = blocking(CacheSizes(l1=32 << 10, l2=1 << 20, l3=32 << 20, l1_ways=8), 12, 32)
    xeon = blocking(CacheSizes(l1=48 << 10, l2=2 << 20, l3=32 << 20, l1_ways=12), 12, 32)
    conflict = gemm_blocking.rows_conflict_in_l1
    assert [conflict(k * 4, 12, zen4) for k in (1024, 2048, 3072, 512, 1536, 1000, 768, 16)] == \
        [True, True, True, False, False, False, False, False]
    assert not any(conflict(k * 4, 12, xeon) for k in (1024, 2048, 512, 1000))
    assert conflict(1024 * 4, 13, xeon) and not conflict(1024 * 4, 8, zen4)
    assert not any(conflict(c * 4, 12, zen4) for c in (1, 3, 6))  # rows within a few lines


@pytest.mark.parametrize("in_place", [False, True])
def test_rows_sharing_an_l1_set_are_copied(in_place, monkeypatch, tmp_path, rng):
    """A Dense over K = 1024 (rows 4 KiB apart, so a micro-tile's rows all fall into one L1 set of a cache of
    4 KiB per way): where the set has fewer ways than the tile has rows, its micro-tiles are copied into the
    padded tile, else read where they lie; both equal the reference (a row tail included). The ways follow
    this machine's tile (12 rows with 32 vector registers, 6 with 16)."""
    from graphc.backends.llvm.target import host_target

    target = host_target()
    rows = gemm.tile_for_rows(37, target.vw, target.num_vector_registers)[0]
    ways = rows if in_place else rows - 1
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", f"l1={4 * ways}K,l1_ways={ways}")
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", "0")  # the shared micro-kernels, recorded below
    used = []  # the micro-kernels of whole tiles (the row tail's tiles of EDGE_ROWS are always copied)
    for name in ("tile_function", "direct_tile_function"):
        real = getattr(gemm, name)
        monkeypatch.setattr(gemm, name, lambda *a, _real=real, _name=name, **kw:
                            (a[1] != gemm.EDGE_ROWS and used.append(_name)) or _real(*a, **kw))
    graph = _dense_graph([(37, 1024, 40)], rng, epilogue=True)
    lib = load(optimize(graph, 2), f"l1_sets_{ways}")
    feeds = _feeds(graph, rng)
    for threads in (1, 2):
        _check(graph, lib, feeds, threads, f"{ways} ways, {threads} threads")
    assert ("direct_tile_function" in used) == in_place and ("tile_function" in used) == (not in_place)


def test_half_width_vectors_where_512_bit_fmas_run_in_halves(monkeypatch):
    """On Zen 4 a panel whose columns end half a vector past a whole one (24, 20 of them) is computed in
    8-lane vectors throughout, where the tile's accumulators fit the registers (8 or 7 rows, not 12);
    other CPUs, whole panels and GRAPHC_GEMM_HALVES=0 keep 16 + 8 lanes."""
    from dataclasses import replace

    from graphc.backends.llvm.target import host_target

    zen4 = replace(host_target(), cpu="znver4", vector_bits=512, num_vector_registers=32)
    xeon = replace(zen4, cpu="sapphirerapids")
    assert gemm.panel_vectors(24, zen4, 8) == (8, 3, 8)
    assert gemm.panel_vectors(20, zen4, 7) == (8, 3, 8)
    assert gemm.panel_vectors(24, zen4, 12) == (16, 2, 8)  # 36 accumulators do not fit
    assert gemm.panel_vectors(32, zen4, 8) == (16, 2, 16)
    assert gemm.panel_vectors(16, zen4, 8) == (16, 1, 16)
    assert gemm.panel_vectors(8, zen4, 8) == (16, 1, 8)
    assert gemm.panel_vectors(28, zen4, 8) == (16, 2, 16)  # 12 columns past the first vector: a whole one
    assert gemm.panel_vectors(24, xeon, 8) == (16, 2, 8)
    assert gemm.panel_vectors(24, replace(zen4, vector_bits=256), 8) == (8, 3, 8)  # AVX2: vectors of 8 anyway
    monkeypatch.setenv(gemm.HALVES_ENV, "0")
    assert gemm.panel_vectors(24, zen4, 8) == (16, 2, 8)
    monkeypatch.setenv(gemm.HALVES_ENV, "2")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_HALVES"):
        gemm.panel_vectors(24, zen4, 8)


@pytest.mark.parametrize("fused", ["1", "0"])
def test_half_width_vectors_give_the_same_bits(fused, monkeypatch, tmp_path, rng):
    """Products with 24, 20, 56 and 88 columns (last panels of 24, 20, 24, 24) on tiles of 8 and 7 rows
    (and 12, which keeps 16 + 8 lanes), one K block and several, with an epilogue, a 1x1 convolution with
    its 2x2 pooling, rows left over: in 8-lane vectors (the CPU made to count as running 512-bit FMAs in
    halves) they equal the reference on 1, 2 and 3 threads, and the 16 + 8-lane build bit for bit (each
    lane sums the same products in the same order)."""
    from graphc.backends.llvm.target import TargetInfo, host_target

    if host_target().vector_bits != 512:
        pytest.skip("the host has no 512-bit vectors: the GEMM's vectors are 8 lanes already")
    monkeypatch.setattr(TargetInfo, "fma512_in_halves", property(lambda self: self.vector_bits == 512))
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", fused)
    widths = []
    real = gemm.panel_vectors
    monkeypatch.setattr(gemm, "panel_vectors", lambda *a: widths.append(real(*a)) or widths[-1])
    shapes = [(64, 40, 24), (49, 17, 20), (61, 33, 56), (29, 700, 88), (24, 9, 24), (3, 5, 24)]
    graph = _dense_graph(shapes, rng, epilogue=True)
    ob = OpBuilder(graph)
    img = graph.add_input("img", TensorType("float32", (2, 14, 14, 48)))
    conv = ob.emit("conv", img, graph.add_constant("wc", rng.standard_normal((1, 1, 48, 24)).astype(np.float32)))
    graph.set_outputs(list(graph.outputs) + [ob.emit("max_pool", ob.emit("relu", conv), kernel=(2, 2),
                                                     strides=(2, 2))])
    feeds = _feeds(graph, rng)
    outs = {}
    for halves in ("1", "0"):
        monkeypatch.setenv(gemm.HALVES_ENV, halves)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / f"cache{halves}"))
        lib = load(optimize(graph, 2), f"halves_{halves}_{fused}")
        for threads in (1, 2, 3):
            _check(graph, lib, feeds, threads, f"halves {halves}, fused epilogue {fused}, {threads} threads")
        outs[halves] = run_native(lib, feeds, 2)
    assert (8, 3, 8) in widths and (16, 2, 8) in widths, widths
    for a, b in zip(outs["1"], outs["0"]):
        np.testing.assert_array_equal(a, b)
