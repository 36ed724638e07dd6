"""The row-sparse gradient all-reduce (graphc.distribute.row_sparse) between two ranks simulated by threads:
bit for bit the dense all-reduce's result, with only the written rows of a large table exchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graphc.distribute import row_sparse
from graphc.ir.types import TensorType
from graphc.training.step import GradientEntry


class ThreadWorld:
    """Two ranks in threads of this process; a collective sums when both have started it."""

    def __init__(self):
        self.barrier = threading.Barrier(2)
        self.shared: list = [None, None]
        self.sizes: list[list[int]] = [[], []]

    def rank(self, r: int):
        world = self

        class Rank:
            def start_all_reduce(self, array, what=""):
                world.barrier.wait()
                world.shared[r] = array.copy()
                world.sizes[r].append(array.size)
                world.barrier.wait()
                array[...] = world.shared[0] + world.shared[1]
                world.barrier.wait()
                return []

            def wait(self, pending, what=""):
                pass

        return Rank()


def _layout(rows: int, width: int) -> tuple[list[GradientEntry], int]:
    """A dense (3, 5) entry, a (rows, width) table, a dense (7,) entry, packed as a gradient buffer."""
    entries, offset = [], 0
    for name, shape in (("bias", (3, 5)), ("table", (rows, width)), ("head", (7,))):
        t = TensorType("float32", shape)
        nbytes = int(np.prod(shape)) * 4
        entries.append(GradientEntry(name, f"d_{name}", "", t, offset, nbytes))
        offset += nbytes
    return entries, offset // 4


def _buffers(rows: int, width: int, written: list[list[int]], rng) -> list[np.ndarray]:
    entries, size = _layout(rows, width)
    table = entries[1]
    buffers = []
    for rank_rows in written:
        b = np.zeros(size, np.float32)
        b[:15] = rng.standard_normal(15)
        b[-7:] = rng.standard_normal(7)
        view = b[table.offset // 4:(table.offset + table.nbytes) // 4].reshape(rows, width)
        view[rank_rows] = rng.standard_normal((len(rank_rows), width))
        buffers.append(b)
    return buffers


def _reduce(buffers: list[np.ndarray], found, scale: float = 1.0) -> ThreadWorld:
    world = ThreadWorld()
    errors = []

    def rank(r):
        try:
            row_sparse.all_reduce_gradients(world.rank(r), buffers[r], found, [], scale=scale)
        except Exception as exc:  # surfaced in the test's thread
            errors.append(exc)
            world.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return world


def test_tables_are_large_float_matrices():
    entries, _ = _layout(4096, 64)  # the table: 1 MiB
    assert row_sparse.tables(entries) == [row_sparse.Table(entries[1].offset // 4, 4096, 64)]
    small, _ = _layout(4096, 63)  # under 1 MiB
    assert row_sparse.tables(small) == []
    few_rows, _ = _layout(128, 4096)  # 2 MiB in 128 rows
    assert row_sparse.tables(few_rows) == []


@pytest.mark.parametrize("rows, width", [(4096, 64), (1031, 257)])
def test_written_rows_only_bit_for_bit_the_dense_sum(rows, width, rng):
    written = [[1, 5, 9, rows - 1], [5, 100]]
    buffers = _buffers(rows, width, written, rng)
    entries, _ = _layout(rows, width)
    table = entries[1]
    view1 = buffers[1][table.offset // 4:(table.offset + table.nbytes) // 4].reshape(rows, width)
    view1[200] = -0.0  # a row of -0.0 on rank 1: written (its bits are set), so summed to the dense sum's +0.0
    want = buffers[0] + buffers[1]
    world = _reduce(buffers, row_sparse.tables(entries))
    for r in range(2):
        np.testing.assert_array_equal(buffers[r].view(np.uint32), want.view(np.uint32), err_msg=f"rank {r}")
    union = 6  # rows 1, 5, 9, 100, 200, rows - 1
    assert world.sizes[0] == world.sizes[1]
    assert sorted(world.sizes[0]) == sorted([rows, 15, 7, union * width])  # marks, two dense ranges, the rows


def test_a_table_written_mostly_goes_dense(rng):
    rows, width = 4096, 64
    buffers = _buffers(rows, width, [list(range(0, rows, 2)), list(range(1, rows, 4))], rng)
    want = buffers[0] + buffers[1]
    entries, _ = _layout(rows, width)
    world = _reduce(buffers, row_sparse.tables(entries))
    np.testing.assert_array_equal(buffers[0], want)
    np.testing.assert_array_equal(buffers[1], want)
    assert sorted(world.sizes[0]) == sorted([rows, 15, 7, rows * width])


def test_without_tables_the_buffer_goes_whole(rng):
    buffers = [rng.standard_normal(101).astype(np.float32) for _ in range(2)]
    want = buffers[0] + buffers[1]
    world = _reduce(buffers, [])
    np.testing.assert_array_equal(buffers[0], want)
    assert world.sizes[0] == [101]


@pytest.mark.parametrize("rows, width", [(4096, 64), (1031, 257)])
def test_scaled_exchange_equals_scaling_the_whole_buffer_first(rows, width, rng):
    """Only what is exchanged is scaled; the sums equal those of buffers scaled whole, bit for bit, tiny
    values that the scale flushes to (signed) zero included."""
    written = [[0, 3, rows - 2], [3, 17]]
    buffers = _buffers(rows, width, written, rng)
    entries, _ = _layout(rows, width)
    table = entries[1]
    for b, tiny in zip(buffers, (1e-45, -1e-45)):
        b[table.offset // 4 + 40 * width] = tiny  # rows written with a denormal that 1/3 flushes to +-0
    scale = 1.0 / 3.0
    want = buffers[0] * np.float32(scale) + buffers[1] * np.float32(scale)
    _reduce(buffers, row_sparse.tables(entries), scale=scale)
    for r in range(2):
        np.testing.assert_array_equal(buffers[r].view(np.uint32), want.view(np.uint32), err_msg=f"rank {r}")


def test_a_table_reduced_densely_is_scaled_too(rng):
    rows, width = 4096, 64
    buffers = _buffers(rows, width, [list(range(0, rows, 2)), list(range(1, rows, 4))], rng)
    want = buffers[0] * np.float32(0.25) + buffers[1] * np.float32(0.25)
    entries, _ = _layout(rows, width)
    _reduce(buffers, row_sparse.tables(entries), scale=0.25)
    np.testing.assert_array_equal(buffers[0].view(np.uint32), want.view(np.uint32))
