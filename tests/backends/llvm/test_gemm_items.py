"""The GEMM's work-item split (``gemm_items``): every (row, panel) covered once, blocks no larger
than the tile buffer, and the threads' shares of the work equal where the split can make them so.

The split's sizes are dims expressions of M and the thread count; they are evaluated here as the
generated code evaluates them, and the item bounds recomputed with the same integer formulas.
"""

from __future__ import annotations

import itertools

import pytest

from graphc.backends.llvm.kernels.gemm_items import QUANTUM, THREADS_DIM, ItemSplit, computed_items, split_items
from graphc.ir import dims

MR = 12


def _bounds(s: ItemSplit, env: dict) -> list[tuple[int, int, int, int]]:
    """``(row0, row_end, p_lo, p_hi)`` of every item."""
    M, mb, nch = dims.evaluate(s.M, env), dims.evaluate(s.mb, env), dims.evaluate(s.nchunks, env)
    tiles, panels = dims.evaluate(s.tiles, env), dims.evaluate(s.panels, env)
    out = []
    for item in range(mb * nch):
        rb, cc = divmod(item, nch)
        row0 = rb * tiles // mb * s.MR
        row_end = M if rb + 1 == mb else min((rb + 1) * tiles // mb * s.MR, M)
        out.append((row0, row_end, cc * panels // nch, (cc + 1) * panels // nch))
    return out


def _shares(s: ItemSplit, env: dict, threads: int) -> list[float]:
    """Each thread's work in row-panels, its items as the runtime hands them out (no stealing)."""
    items = _bounds(s, env)
    n = len(items)
    work = [0.0] * threads
    for t in range(threads):
        for r0, r1, p0, p1 in items[n * t // threads:n * (t + 1) // threads]:
            work[t] += (r1 - r0) * (p1 - p0)
    return work


@pytest.mark.parametrize("M", [0, 1, 3, 7, 11, 12, 13, 25, 49, 64, 100, 196, 785, 3136])
@pytest.mark.parametrize("panels", [1, 3, 10, 17, 40])
@pytest.mark.parametrize("threads", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("round_rows", [False, True])
@pytest.mark.parametrize("tpb", [8, None])
def test_items_cover_every_row_and_panel_once(M, panels, threads, round_rows, tpb):
    s = split_items("m", MR, tpb, panels, per_thread=QUANTUM, round_rows=round_rows,
                    max_chunk_panels=6)
    env = {"m": M, THREADS_DIM: threads}
    items = _bounds(s, env)
    assert len(items) == dims.evaluate(s.items, env) >= 1
    if tpb is None:  # row groups: as many as the claim blocks (1 on one thread, 4 per thread) allow
        groups = dims.evaluate(s.mb, env)
        assert groups == max(1, min(M // MR, (1 if threads == 1 else 4 * threads) if round_rows else 1))
    seen: dict[tuple[int, int], int] = {}
    for r0, r1, p0, p1 in items:
        assert tpb is None or r1 - r0 <= (tpb + 1) * MR, "a row block outgrows the tile buffer"
        assert p1 - p0 <= 6, "a chunk wider than max_chunk_panels"
        assert r0 % MR == 0
        for r in range(r0, r1):
            for p in range(p0, p1):
                seen[r, p] = seen.get((r, p), 0) + 1
    assert seen == {(r, p): 1 for r in range(M) for p in range(panels)}


@pytest.mark.parametrize("M,panels", [(49, 10), (49, 40), (64, 10), (196, 21), (13, 10), (36, 10), (100, 6)])
@pytest.mark.parametrize("threads", [2, 4])
def test_small_products_share_work_evenly(M, panels, threads):
    """Few row tiles split over columns: no thread's share more than one item above the mean, and
    on 2 threads within 10 % of it (7x7 on 2 threads once gave one thread 2.5 tiles of the 4 and a
    row, the other 1.5 and the row)."""
    s = split_items(M, MR, 8, panels, per_thread=QUANTUM, round_rows=True)
    env = {THREADS_DIM: threads}
    work = _shares(s, env, threads)
    mean = M * panels / threads
    largest_item = max((r1 - r0) * (p1 - p0) for r0, r1, p0, p1 in _bounds(s, env))
    assert max(work) - mean <= largest_item, (work, mean)
    if threads == 2:
        assert max(work) / mean < 1.1, (work, mean)


def test_one_thread_splits_nothing_but_by_the_caches():
    s = split_items(49, MR, 8, 10, per_thread=QUANTUM, round_rows=True, max_chunk_panels=4)
    env = {THREADS_DIM: 1}
    assert dims.evaluate(s.mb, env) == 1
    assert dims.evaluate(s.nchunks, env) == 3  # 10 panels in chunks of at most 4: 3, 3, 4


@pytest.mark.parametrize("window,n,want", [((3, 3), 64, 1), ((3, 3), 128, 1), ((3, 3), 144, 1), ((3, 3), 145, 2),
                                           ((3, 3), 728, 2), ((5, 5), 256, 1), ((3,), 49, 2)])
def test_a_separable_products_items_per_thread_follow_the_depthwise_cost(window, n, want, monkeypatch):
    """Each chunk of columns computes the depthwise rows again: where they cost a sixteenth of the product
    or more, one item per thread, else two; GRAPHC_SEPARABLE_ITEMS sets it."""
    from types import SimpleNamespace

    from graphc.backends.llvm.kernels.conv import DepthwiseA

    taps = [tuple(t) for t in itertools.product(*(range(k) for k in window))]
    source = DepthwiseA(None, None, SimpleNamespace(taps=taps), 1, 16)
    monkeypatch.delenv("GRAPHC_SEPARABLE_ITEMS", raising=False)
    assert source.items_per_thread(n) == want
    monkeypatch.setenv("GRAPHC_SEPARABLE_ITEMS", "3")
    assert source.items_per_thread(n) == 3
    s = split_items(1, 1, 1, 8, per_thread=f"({source.items_per_thread(n)} * {THREADS_DIM})", round_rows=False)
    assert dims.evaluate(s.items, {THREADS_DIM: 2}) == 6


@pytest.mark.parametrize("per_thread", [1, 2, 3])
@pytest.mark.parametrize("M,panels", [(49, 5), (1, 8), (100, 4)])
def test_computed_rows_are_computed_once_on_one_thread(per_thread, M, panels):
    """A source that computes its rows computes them again per chunk of columns: on one thread the split
    aims for one item (a row block of all the rows is one chunk), on several for ``per_thread`` each."""
    target = computed_items(per_thread)
    assert [dims.evaluate(target, {THREADS_DIM: t}) for t in (1, 2, 3)] == [1, 2 * per_thread, 3 * per_thread]
    s = split_items(M, 7, None, panels, per_thread=target, round_rows=False)
    assert dims.evaluate(s.nchunks, {THREADS_DIM: 1}) == 1
    assert dims.evaluate(s.items, {THREADS_DIM: 2}) == min(panels, 2 * per_thread)
