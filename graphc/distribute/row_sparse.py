"""The gradient all-reduce that carries only the rows some rank wrote, for large tables.

An embedding's gradient is zero except in the rows its batch looked up: 50,000 x 256 floats (51 MB) of
which a batch of 32 texts touches a few thousand rows. Reducing it densely moves the whole table every
step; TensorFlow's and Horovod's data parallelism exchange such gradients as (indices, rows) instead.
Here every entry of the gradient buffer with at least ``MIN_ROWS`` rows and ``MIN_BYTES`` bytes is a
candidate: each rank marks its rows with any bit set (so a ``-0.0`` counts as written), the marks are
summed across ranks in one small all-reduce, and when the union of the marked rows is at most half the
table, only those rows are gathered, all-reduced and scattered back. A row outside the union is all-zero
bits on every rank, so its dense sum would be +0.0 too: the result is bit for bit the dense all-reduce's
for two ranks (the same pairwise sums), and identical on every rank for any number. The rest of the
buffer (and a candidate whose union is larger) is reduced densely, in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_ROWS = 256
MIN_BYTES = 1 << 20
MAX_UNION = 0.5  # above this fraction of the rows, a dense all-reduce of the entry costs no more


@dataclass(frozen=True)
class Table:
    """A candidate entry of the flat float32 gradient buffer: elements [start, start + rows * width)."""

    start: int
    rows: int
    width: int


def tables(entries: Sequence, itemsize: int = 4) -> list[Table]:
    """The gradient entries (``GradientEntry``: byte offset, bytes, type) worth reducing by rows."""
    found = []
    for e in entries:
        shape = tuple(e.type.shape)
        if len(shape) >= 2 and shape[0] >= MIN_ROWS and e.nbytes >= MIN_BYTES and e.type.dtype == "float32":
            found.append(Table(e.offset // itemsize, int(shape[0]), int(np.prod(shape[1:]))))
    return found


def _dense_ranges(size: int, found: list[Table]) -> list[tuple[int, int]]:
    ranges, at = [], 0
    for t in sorted(found, key=lambda t: t.start):
        if t.start > at:
            ranges.append((at, t.start))
        at = t.start + t.rows * t.width
    if at < size:
        ranges.append((at, size))
    return ranges


def _written_rows(view: np.ndarray) -> np.ndarray:
    """Which rows of a (rows, width) float32 table have any bit set, read 8 bytes at a time where the width
    allows (one pass over the table, the cost of this exchange)."""
    bits = view.view(np.uint64) if view.shape[1] % 2 == 0 else view.view(np.uint32)
    return np.bitwise_or.reduce(bits, axis=1) != 0


def _scaled(part: np.ndarray, scale: float) -> np.ndarray:
    if scale != 1.0:
        np.multiply(part, np.float32(scale), out=part)
    return part


def all_reduce_gradients(dp, buffer: np.ndarray, found: list[Table], pending: list, scale: float = 1.0) -> None:
    """Set the flat float32 ``buffer`` to the sum across ranks of ``buffer * scale`` in place (``dp``: a
    DataParallel's start_all_reduce and wait), ``found`` reduced by rows; ``pending`` (operations already
    started, such as the logged totals) is waited for with the rest. Only what is exchanged is scaled (a row
    no rank wrote is zero, scaled or not): the same values as scaling the whole buffer first, bit for bit."""
    what = "the all-reduce of the gradients"
    views = [buffer[t.start:t.start + t.rows * t.width].reshape(t.rows, t.width) for t in found]
    written = [_written_rows(v) for v in views]
    marks = np.concatenate(written).astype(np.int32) if written else np.zeros(0, np.int32)
    marking = dp.start_all_reduce(marks, "the all-reduce of the gradient tables' written rows") if found else []
    for lo, hi in _dense_ranges(buffer.size, found):
        pending = pending + dp.start_all_reduce(_scaled(buffer[lo:hi], scale), what)
    if not found:
        dp.wait(pending, what)
        return
    dp.wait(marking, "the all-reduce of the gradient tables' written rows")
    compact, at = [], 0
    for t, view in zip(found, views):
        rows = np.flatnonzero(marks[at:at + t.rows])
        at += t.rows
        if len(rows) > MAX_UNION * t.rows:
            pending = pending + dp.start_all_reduce(_scaled(view, scale), what)
        elif len(rows):
            part = _scaled(np.ascontiguousarray(view[rows]), scale)
            compact.append((view, rows, part))
            pending = pending + dp.start_all_reduce(part, what)
    dp.wait(pending, what)
    for view, rows, part in compact:
        view[rows] = part
