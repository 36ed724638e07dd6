"""The records a memory plan is made of: where every tensor lives, from when to when.

A :class:`MemoryPlan` places each op result in one of four regions, like Glow's bundles
and XLA's buffer assignment:

- ``arena``: intermediates, packed into one scratch allocation of ``arena_bytes``;
- ``input`` / ``output``: the caller's buffers (graph inputs and outputs);
- ``constant``: the weights.

Several tensors may share one *buffer*: a view (a ``slice`` or a contiguous ``reshape``) reads its
base's storage; an in-place elementwise op writes over an input that dies there; each input of
an in-place concatenation is written straight into its slice of the concatenated result. A
tensor's place is therefore its buffer, its byte offset from the start of its region (arena
tensors: from the start of the arena) and its element strides (row-major unless it is a
strided view).
"""

from __future__ import annotations

from dataclasses import dataclass, field

REGIONS = ("arena", "input", "output", "constant")


@dataclass(frozen=True)
class TensorPlacement:
    """Where one value lives during the schedule."""

    name: str
    region: str
    buffer: str  # the value that owns the storage (itself unless it aliases another)
    offset: int  # bytes from the start of the region (arena) or of the buffer (other regions)
    nbytes: int  # the tensor's own size (a strided view spans more)
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    first: int  # schedule index of the op that writes it (-1: before the first op)
    last: int  # schedule index of its last reader (len(schedule): read after the last op)
    how: str = ""  # "", "view", "in-place", "concat"

    @property
    def contiguous(self) -> bool:
        expect = 1
        for d, s in zip(reversed(self.shape), reversed(self.strides)):
            if d != 1 and s != expect:
                return False
            expect *= d
        return True


@dataclass(frozen=True)
class Buffer:
    """One allocation of the arena: the tensors sharing it, its lifetime, size and offset."""

    name: str
    size: int  # bytes, rounded up to the alignment
    first: int
    last: int
    offset: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Placed:
    """A buffer's place in an arena and the steps it is alive over (inclusive)."""

    name: str
    offset: int
    size: int  # bytes
    first: int
    last: int


def check_apart(buffers: list[Placed], arena_bytes: int) -> None:
    """Raise AssertionError unless every buffer lies inside the arena and buffers alive at once do not overlap."""
    for b in buffers:
        if b.offset + b.size > arena_bytes:
            raise AssertionError(f"buffer {b.name!r} ends at {b.offset + b.size} beyond the arena "
                                 f"({arena_bytes} bytes)")
    ordered = sorted((b for b in buffers if b.size), key=lambda b: b.first)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.first > a.last:
                break
            if a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise AssertionError(f"buffers {a.name!r} [{a.offset}, {a.offset + a.size}) ops "
                                     f"{a.first}..{a.last} and {b.name!r} [{b.offset}, "
                                     f"{b.offset + b.size}) ops {b.first}..{b.last} overlap")


@dataclass
class MemoryPlan:
    """The result of planning: arena size, bounds, and every tensor's place and lifetime."""

    graph: str
    bindings: dict[str, int]
    alignment: int
    schedule: list[str]  # op ids in execution order
    arena_bytes: int
    naive_bytes: int  # every intermediate its own (aligned) buffer, no reuse, no aliasing
    peak_live_bytes: int  # most bytes of arena buffers alive at once: the lower bound
    buffers: list[Buffer]
    tensors: dict[str, TensorPlacement]
    algorithm: str = ""
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def offsets(self) -> dict[str, int]:
        """Arena byte offset of every tensor that lives in the arena."""
        return {n: t.offset for n, t in self.tensors.items() if t.region == "arena"}

    @property
    def lifetimes(self) -> dict[str, tuple[int, int]]:
        """(first, last) schedule index of every planned tensor."""
        return {n: (t.first, t.last) for n, t in self.tensors.items()}

    @property
    def efficiency(self) -> float:
        """``arena_bytes / peak_live_bytes`` (1.0 is optimal)."""
        return self.arena_bytes / self.peak_live_bytes if self.peak_live_bytes else 1.0

    def check(self) -> None:
        """Raise AssertionError if two buffers alive at once overlap or an offset is misaligned."""
        for b in self.buffers:
            if b.offset % self.alignment or b.size % self.alignment:
                raise AssertionError(f"buffer {b.name!r} at {b.offset} (+{b.size}) is not "
                                     f"{self.alignment}-byte aligned")
        check_apart([Placed(b.name, b.offset, b.size, b.first, b.last) for b in self.buffers], self.arena_bytes)
        if self.arena_bytes < self.peak_live_bytes:
            raise AssertionError(f"arena {self.arena_bytes} < peak live {self.peak_live_bytes}")

    def summary(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in sorted(self.bindings.items()))
        return (f"memory plan of {self.graph} ({dims or 'static'}): arena {self.arena_bytes:,} B, "
                f"peak live {self.peak_live_bytes:,} B ({self.efficiency:.3f}x), naive {self.naive_bytes:,} B, "
                f"{len(self.buffers)} buffers for {len(self.tensors)} tensors, {self.alignment}-byte aligned")

    def format(self) -> str:
        """A table: one line per tensor in schedule order (region, offset, size, lifetime, sharing)."""
        lines = [self.summary(),
                 f"  {'tensor':<32} {'region':<8} {'offset':>12} {'bytes':>12} {'first':>6} {'last':>6}  shares"]
        for t in sorted(self.tensors.values(), key=lambda t: (t.first, t.name)):
            share = "" if t.buffer == t.name else f"{t.how} {t.buffer}"
            lines.append(f"  {t.name:<32} {t.region:<8} {t.offset:>12,} {t.nbytes:>12,} {t.first:>6} "
                         f"{t.last:>6}  {share}")
        return "\n".join(lines)
