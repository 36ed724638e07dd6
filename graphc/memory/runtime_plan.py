"""The memory plan a native instance ran with, as its runtime reports it.

:func:`graphc.plan_memory` plans the graph (views, in-place ops, concatenation in place) for a report; the
native code keeps what its kernels leave of that graph (fused epilogues, pools folded into their
convolution, a depthwise convolution's padded copy, concatenations written in place) in one scratch arena
that its C runtime plans whenever the shapes change, with the same heap algorithm (greedy by size, the
smallest arena of four placement orders by best and by first fit: ``graphc/c_runtime/src/arena.c``,
checked offset for offset against :class:`~graphc.memory.planner.GreedyBySizeAllocator`). A large batch
runs in sub-batches planned for their rows, at once on several threads with a copy of the arena each
(:mod:`graphc.backends.llvm.batch_split`; a batch's tail planned in the same arena for the whole batch).
:class:`RuntimePlan` is that plan, read back through the C ABI
(``gc_instance_memory``, ``gc_instance_scratch``) after a run: what ran, not a second computation of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.memory.plan import Placed, check_apart


@dataclass(frozen=True)
class RuntimeBuffer:
    """One scratch buffer of the arena: the value it holds, its place, and the ops it lives over."""

    name: str
    offset: int
    nbytes: int
    first: int  # the first op (in the order the ops run) that touches it
    last: int  # the last one


@dataclass(frozen=True)
class RuntimePlan:
    """A native instance's memory in its last run (:meth:`graphc.runtime.Instance.memory_plan`)."""

    model: str
    threads: int
    arena_bytes: int  # one copy of the arena
    arena_copies: int  # one per thread where sub-batches ran at once, else 1
    thread_scratch_bytes: int  # the kernels' per-thread scratch, all threads together
    packed_bytes: int  # weights repacked for the kernels, once per instance
    sub_batch: int  # samples in the largest sub-batch (0: the batch ran whole)
    sub_batch_count: int
    buffers: tuple[RuntimeBuffer, ...]
    tail_op: int = -1  # the first op of the batch's tail where the sub-batches had one (its buffers: the batch's)

    @property
    def scratch_bytes(self) -> int:
        """Every byte of scratch the run used: the arena's copies and the threads' kernel scratch."""
        return self.arena_bytes * self.arena_copies + self.thread_scratch_bytes

    def check(self) -> None:
        """Raise AssertionError unless every buffer lies in the arena and buffers alive together are apart."""
        check_apart([Placed(b.name, b.offset, b.nbytes, b.first, b.last) for b in self.buffers], self.arena_bytes)

    def summary(self) -> str:
        if self.sub_batch:
            how = ("at once, one per thread" if self.arena_copies > 1 else "one after another")
            batch = f"{self.sub_batch_count} sub-batches of up to {self.sub_batch} samples, {how}"
            if self.tail_op >= 0:
                batch += f", then the ops from {self.tail_op} on over the whole batch"
        else:
            batch = "the batch whole"
        return (f"native memory plan of {self.model} ({self.threads} thread(s), {batch}): arena {self.arena_bytes:,} B"
                f" x {self.arena_copies}, thread scratch {self.thread_scratch_bytes:,} B, packed weights "
                f"{self.packed_bytes:,} B; {len(self.buffers)} scratch buffers, planned by the runtime "
                "(greedy by size)")

    def format(self) -> str:
        """A table: one line per scratch buffer in the order the ops first touch them."""
        lines = [self.summary(), f"  {'value':<40} {'offset':>12} {'bytes':>12} {'first':>6} {'last':>6}"]
        for b in sorted(self.buffers, key=lambda b: (b.first, b.offset, b.name)):
            lines.append(f"  {b.name:<40} {b.offset:>12,} {b.nbytes:>12,} {b.first:>6} {b.last:>6}")
        return "\n".join(lines)
