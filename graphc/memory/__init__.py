"""Static memory planning: liveness, buffer sharing, and offsets in one arena.

``plan_memory(graph, batch_size=32)`` returns a :class:`MemoryPlan` (``arena_bytes``,
``naive_bytes``, ``peak_live_bytes``, per-tensor ``offsets`` and ``lifetimes``, ``format()``
for a table). A :class:`MemoryPlanner` keeps the size-independent analysis so that
``planner.plan(batch_size=...)`` re-plans cheaply for new free-dimension values.
"""

from graphc.memory.liveness import Alias, Liveness, analyze, static_aliases
from graphc.memory.plan import Buffer, MemoryPlan, TensorPlacement
from graphc.memory.planner import (
    DEFAULT_ALIGNMENT,
    ArenaAllocator,
    GreedyBySizeAllocator,
    MemoryPlanner,
    NaiveAllocator,
    align_up,
    free_dims,
    plan_memory,
    resolve_bindings,
)

__all__ = ["plan_memory", "MemoryPlanner", "MemoryPlan", "Buffer", "TensorPlacement", "ArenaAllocator",
           "GreedyBySizeAllocator", "NaiveAllocator", "DEFAULT_ALIGNMENT", "align_up", "free_dims",
           "resolve_bindings", "Alias", "Liveness", "analyze", "static_aliases"]
