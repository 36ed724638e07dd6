"""Heap algorithms: hand-written lifetime tables and property tests over random buffers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.memory import GreedyBySizeAllocator, NaiveAllocator, align_up


def place(allocator, table):
    for size, first, last in table:
        allocator.add_buffer(size, first, last)
    return allocator.offsets(), allocator.arena_bytes()


def peak(table, alignment):
    steps = range(min(f for _, f, _ in table), max(la for _, _, la in table) + 1)
    return max(sum(align_up(s, alignment) for s, f, la in table if f <= t <= la) for t in steps)


def test_reuses_space_of_dead_buffers():
    # A and C never live together; B overlaps both.
    offsets, arena = place(GreedyBySizeAllocator(alignment=1), [(100, 0, 1), (50, 1, 2), (100, 2, 3)])
    assert offsets == [0, 100, 0] and arena == 150 == peak([(100, 0, 1), (50, 1, 2), (100, 2, 3)], 1)


def test_best_fit_picks_the_smallest_gap():
    table = [(64, 0, 9), (256, 0, 0), (64, 0, 9), (128, 2, 2), (128, 3, 3), (64, 1, 1)]
    offsets, arena = place(GreedyBySizeAllocator(alignment=64), table)
    assert arena == peak(table, 64) == 384
    assert offsets[3] == offsets[4]  # the two 128-byte buffers share the hole the 256-byte one left


def test_sizes_round_up_to_the_alignment():
    offsets, arena = place(GreedyBySizeAllocator(alignment=64), [(1, 0, 0), (65, 0, 0)])
    assert sorted(offsets) == [0, 128] and arena == 192


def test_naive_allocator_gives_every_buffer_its_own_space():
    offsets, arena = place(NaiveAllocator(alignment=64), [(10, 0, 0), (100, 5, 5), (64, 9, 9)])
    assert offsets == [0, 64, 192] and arena == 256


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="alignment must be a power of two, got 48"):
        GreedyBySizeAllocator(alignment=48)
    with pytest.raises(ValueError, match="invalid buffer: size 8, lifetime 3..2"):
        GreedyBySizeAllocator().add_buffer(8, 3, 2)
    with pytest.raises(ValueError, match="invalid buffer: size -1"):
        GreedyBySizeAllocator().add_buffer(-1, 0, 0)


def test_empty_plan():
    assert GreedyBySizeAllocator().arena_bytes() == 0


buffers = st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 30), st.integers(0, 12)), min_size=1,
                   max_size=40).map(lambda bs: [(s, f, f + n) for s, f, n in bs])


@settings(max_examples=150, deadline=None)
@given(table=buffers, alignment=st.sampled_from([1, 16, 64]))
def test_live_buffers_never_overlap(table, alignment):
    allocator = GreedyBySizeAllocator(alignment)
    offsets, arena = place(allocator, table)
    sizes = [align_up(s, alignment) for s, _, _ in table]
    for i, (_, fi, li) in enumerate(table):
        assert offsets[i] % alignment == 0
        assert offsets[i] + sizes[i] <= arena
        for j in range(i):
            _, fj, lj = table[j]
            if fi <= lj and fj <= li:  # alive at the same time
                assert offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i], (i, j)
    assert peak(table, alignment) <= arena <= sum(sizes)
    naive = NaiveAllocator(alignment)
    assert place(naive, table)[1] == sum(sizes)
