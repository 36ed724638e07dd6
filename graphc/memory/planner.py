"""Static memory planning: every intermediate tensor gets an offset in one arena.

Two stages, as TFLite Micro and XLA separate them:

1. :class:`MemoryPlanner` analyses the graph once (``liveness.py``): which values share
   storage (views, in-place ops, concatenation in place), the execution order (the candidate
   schedule with the lowest peak), and each buffer's lifetime in that order. None of this
   depends on the sizes of free dimensions.
2. :meth:`MemoryPlanner.plan` takes the free-dimension values (``batch_size=32``...), sizes
   every buffer and assigns offsets with a heap algorithm. That stage is cheap (linear in the
   number of tensors for sizes, quadratic at worst in the number of live-overlapping
   buffers for placement): a runtime that learns a new batch size or sequence length re-runs
   it rather than keeping a parametric plan.

The heap algorithm is greedy by size with best fit (TFLite Micro's GreedyMemoryPlanner,
XLA's GlobalDecreasingSizeBestFitHeap): buffers in decreasing size order, each placed in the
smallest gap between the buffers already placed that are alive at the same time, else on
top. Several orders are tried (by size then lifetime, by size x lifetime, by first use, by size
then position in the list), each also placed by first fit (the lowest gap that holds the
buffer), and the smallest arena wins: no order and neither fit is always the smallest (a
transformer encoder's native arena: 1.18 MB by size then lifetime, best fit; 1.05 MB by size
then position, first fit).
The native runtime plans its arena with the same algorithm (``graphc/c_runtime/src/arena.c``,
tested offset for offset against this one). Every offset and size is a multiple of ``alignment``
(64 bytes: a cache line, and enough for any vector load). The lower bound reported next to it,
``peak_live_bytes``, is the most bytes alive at one step (XLA's NoFragmentationStatsHeap).

The :class:`ArenaAllocator` interface (``add_buffer(size, first, last)``, then ``offsets``
and ``arena_bytes``) is TFLite Micro's, so another heap algorithm can be swapped in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from graphc.ir import dims as _dims
from graphc.ir.graph import Graph
from graphc.memory.liveness import SCHEDULES, Alias, Liveness, analyze, candidate_orders, peak_bytes, static_aliases
from graphc.memory.plan import Buffer, MemoryPlan, TensorPlacement

DEFAULT_ALIGNMENT = 64


def align_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


# ---------------------------------------------------------------------------- heap algorithms
@dataclass(frozen=True)
class _Req:
    size: int
    first: int
    last: int


class ArenaAllocator:
    """Assigns offsets to buffers with known sizes and lifetimes (TFLite Micro's planner interface)."""

    name = "abstract"

    def __init__(self, alignment: int = DEFAULT_ALIGNMENT):
        if alignment < 1 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.alignment = alignment
        self._reqs: list[_Req] = []
        self._offsets: list[int] | None = None

    def add_buffer(self, size: int, first: int, last: int) -> int:
        """Register a buffer alive from step ``first`` to step ``last`` (inclusive); returns its id."""
        if size < 0 or last < first:
            raise ValueError(f"invalid buffer: size {size}, lifetime {first}..{last}")
        self._reqs.append(_Req(align_up(size, self.alignment), first, last))
        self._offsets = None
        return len(self._reqs) - 1

    def offsets(self) -> list[int]:
        if self._offsets is None:
            self._offsets = self._assign(self._reqs)
        return self._offsets

    def arena_bytes(self) -> int:
        offs = self.offsets()
        return max((o + r.size for o, r in zip(offs, self._reqs)), default=0)

    def _assign(self, reqs: list[_Req]) -> list[int]:
        raise NotImplementedError


class NaiveAllocator(ArenaAllocator):
    """Every buffer its own space, one after the other: the no-reuse baseline."""

    name = "naive"

    def _assign(self, reqs: list[_Req]) -> list[int]:
        out, top = [], 0
        for r in reqs:
            out.append(top)
            top += r.size
        return out


def _place(reqs: Sequence[_Req], order: Sequence[int], best: bool) -> tuple[list[int], int]:
    """Each buffer of ``order`` in turn into a gap between the placed buffers alive with it that holds it --
    the smallest such gap (best fit) or the lowest (first fit) -- else above them all."""
    offsets = [0] * len(reqs)
    placed: list[int] = []
    arena = 0
    for i in order:
        r = reqs[i]
        busy = sorted((offsets[j], offsets[j] + reqs[j].size) for j in placed
                      if reqs[j].first <= r.last and r.first <= reqs[j].last)
        best_off, best_gap = None, None
        end = 0
        for lo, hi in busy:
            gap = lo - end
            if gap >= r.size and (best_gap is None or (best and gap < best_gap)):
                best_off, best_gap = end, gap
            end = max(end, hi)
        offset = end if best_off is None else best_off
        offsets[i] = offset
        placed.append(i)
        arena = max(arena, offset + r.size)
    return offsets, arena


class GreedyBySizeAllocator(ArenaAllocator):
    """Greedy by size; the smallest arena of a few placement orders, each placed by best and by first fit
    (see the module docstring)."""

    name = "greedy-by-size"

    def __init__(self, alignment: int = DEFAULT_ALIGNMENT):
        super().__init__(alignment)
        self.chosen_order = ""

    def _assign(self, reqs: list[_Req]) -> list[int]:
        idx = range(len(reqs))
        orders = {
            "size": sorted(idx, key=lambda i: (-reqs[i].size, -(reqs[i].last - reqs[i].first), reqs[i].first)),
            "size*lifetime": sorted(idx, key=lambda i: (-reqs[i].size * (reqs[i].last - reqs[i].first + 1),
                                                        -reqs[i].size, reqs[i].first)),
            "first use": sorted(idx, key=lambda i: (reqs[i].first, -reqs[i].size)),
            "size, then position": sorted(idx, key=lambda i: -reqs[i].size),
        }
        best: tuple[int, list[int]] | None = None
        for name, order in orders.items():
            for fit in ("best", "first"):
                offsets, arena = _place(reqs, order, fit == "best")
                if best is None or arena < best[0]:
                    best = (arena, offsets)
                    self.chosen_order = f"{name}, {fit} fit"
        return best[1] if best else []


# ---------------------------------------------------------------------------- bindings
def free_dims(graph: Graph) -> list[str]:
    """The free dimensions of a graph (the names in its inputs' shapes), sorted."""
    names: set[str] = set()
    for name in graph.inputs:
        for d in graph.values[name].type.shape:
            names |= _dims.symbols(d)
    return sorted(names)


def resolve_bindings(graph: Graph, batch_size: int | None, dims: Mapping[str, int]) -> dict[str, int]:
    """Free-dimension values from ``batch_size`` and named dims; errors name what is wrong."""
    free = free_dims(graph)
    unknown = sorted(set(dims) - set(free))
    if unknown:
        raise ValueError(f"graph {graph.name!r} has no free dimension(s) {unknown}; its free dimensions are "
                         f"{free or 'none'}")
    bindings = {k: int(v) for k, v in dims.items()}
    if batch_size is not None:
        if "batch" in free:
            bindings["batch"] = int(batch_size)
        else:
            leading = {graph.values[n].type.shape[0] for n in graph.inputs if graph.values[n].type.rank}
            if leading != {batch_size}:
                raise ValueError(f"graph {graph.name!r} has no free batch dimension (inputs' leading dims: "
                                 f"{sorted(map(str, leading))}), so batch_size={batch_size} cannot apply")
    missing = [d for d in free if d not in bindings]
    if missing:
        hint = "batch_size=" if missing == ["batch"] else ", ".join(f"{d}=" for d in missing)
        raise ValueError(f"graph {graph.name!r}: free dimension(s) {missing} need values; pass {hint}")
    for k, v in bindings.items():
        if v < 0:
            raise ValueError(f"free dimension {k!r} must be >= 0, got {v}")
    return bindings


# ---------------------------------------------------------------------------- the planner
def _row_major(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


class MemoryPlanner:
    """The dims-independent half of planning; :meth:`plan` is the cheap, re-runnable half.

    ``schedule``: ``"auto"`` (the candidate with the lowest peak for ``bindings``, default all
    free dims 1), one of ``"default"``, ``"greedy"``, ``"dfs"``, or a list of op ids.
    ``inplace``, ``concat_in_place``, ``strided_views``: turn the sharing kinds on or off (a
    backend that cannot read strided views passes ``strided_views=False``: slices and concat
    parts that are not contiguous then get buffers of their own).
    """

    def __init__(self, graph: Graph, *, alignment: int = DEFAULT_ALIGNMENT, schedule: str | Sequence[str] = "auto",
                 inplace: bool = True, concat_in_place: bool = True, strided_views: bool = True,
                 bindings: Mapping[str, int] | None = None):
        if alignment < 1 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.graph = graph
        self.alignment = alignment
        self.static = static_aliases(graph, concat_in_place=concat_in_place, strided_views=strided_views)
        sample = {d: 1 for d in free_dims(graph)}
        sample.update(bindings or {})

        def size(v: str) -> int:
            return align_up(graph.values[v].type.nbytes(sample), alignment)

        if isinstance(schedule, str) and schedule == "auto":
            candidates = candidate_orders(graph, self.static, size)
        elif isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise ValueError(f"unknown schedule {schedule!r}; choose 'auto' or one of {SCHEDULES}")
            candidates = candidate_orders(graph, self.static, size, (schedule,))
        else:
            order = [graph.op(op_id) for op_id in schedule]
            _check_order(graph, order)
            candidates = {"given": order}
        best: tuple[int, str, Liveness] | None = None
        for name, order in candidates.items():
            live = analyze(graph, order, self.static, inplace=inplace)
            peak = peak_bytes(live, size)
            if best is None or peak < best[0]:
                best = (peak, name, live)
        assert best is not None
        _, self.schedule_name, self.liveness = best

    def plan(self, batch_size: int | None = None, **dims: int) -> MemoryPlan:
        """Sizes and offsets for these free-dimension values (cheap: re-run it when they change)."""
        graph, live = self.graph, self.liveness
        bindings = resolve_bindings(graph, batch_size, dims)
        nbytes_cache: dict[str, int] = {}
        shapes: dict[str, tuple[int, ...]] = {}

        def shape(v: str) -> tuple[int, ...]:
            s = shapes.get(v)
            if s is None:
                s = shapes[v] = graph.values[v].type.concrete_shape(bindings)
            return s

        def nbytes(v: str) -> int:
            n = nbytes_cache.get(v)
            if n is None:
                n = nbytes_cache[v] = graph.values[v].type.nbytes(bindings)
            return n

        roots = live.arena_roots()
        allocator = GreedyBySizeAllocator(self.alignment)
        for r in roots:
            allocator.add_buffer(nbytes(r), max(live.first[r], 0), max(live.last[r], live.first[r], 0))
        offsets = dict(zip(roots, allocator.offsets()))
        arena = allocator.arena_bytes()

        layouts: dict[str, tuple[str, int, tuple[int, ...]]] = {}

        def layout(v: str) -> tuple[str, int, tuple[int, ...]]:
            got = layouts.get(v)
            if got is not None:
                return got
            a: Alias | None = live.aliases.get(v)
            if a is None:
                got = (v, 0, _row_major(shape(v)))
            else:
                r, start, strides = layout(a.base)
                if a.how == "in-place":
                    got = (r, start, strides)
                elif a.how == "view" and not a.strided:
                    got = (r, start, _row_major(shape(v)))
                elif a.how == "view":
                    first = slice(a.start, a.stop, a.step).indices(shape(a.base)[a.axis])[0]
                    st = list(strides)
                    st[a.axis] *= a.step
                    got = (r, start + first * strides[a.axis], tuple(st))
                else:  # concat part
                    inputs = graph.op(a.op).inputs
                    before = sum(shape(x)[a.axis] for x in inputs[:a.part])
                    got = (r, start + before * strides[a.axis], strides)
            layouts[v] = got
            return got

        tensors: dict[str, TensorPlacement] = {}
        for v in list(graph.inputs) + [o for op in live.order for o in op.outputs]:
            r, start, strides = layout(v)
            region = live.region[r]
            item = graph.values[v].type.itemsize
            base = offsets[r] if region == "arena" else 0
            a = live.aliases.get(v)
            tensors[v] = TensorPlacement(v, region, r, base + start * item, nbytes(v), shape(v), strides,
                                         live.value_first[v], live.value_last[v], a.how if a else "")
        buffers = [Buffer(r, align_up(nbytes(r), self.alignment), max(live.first[r], 0),
                          max(live.last[r], live.first[r], 0), offsets[r], tuple(live.members[r]))
                   for r in roots]
        naive = sum(align_up(nbytes(o), self.alignment) for op in live.order for o in op.outputs
                    if o not in graph.outputs)
        hows = [a.how for a in live.aliases.values()]
        stats = {"views": hows.count("view"), "in_place": hows.count("in-place"),
                 "concat_parts": hows.count("concat"), "buffers": len(buffers)}
        return MemoryPlan(graph.name, bindings, self.alignment, [op.id for op in live.order], arena, naive,
                          peak_bytes(live, nbytes), buffers, tensors,
                          f"{allocator.name} (order: {allocator.chosen_order}), schedule: {self.schedule_name}",
                          stats)


def _check_order(graph: Graph, order: list) -> None:
    seen: set[str] = set(graph.inputs) | set(graph.constants)
    if len(order) != len(graph) or len({op.id for op in order}) != len(graph):
        raise ValueError(f"a schedule must list each of the graph's {len(graph)} ops once, got {len(order)}")
    for op in order:
        missing = [v for v in op.inputs if v not in seen]
        if missing:
            raise ValueError(f"schedule runs op {op.id!r} before {missing} are computed")
        seen.update(op.outputs)


def plan_memory(graph: Graph, batch_size: int | None = None, *, alignment: int = DEFAULT_ALIGNMENT,
                schedule: str | Sequence[str] = "auto", inplace: bool = True, concat_in_place: bool = True,
                strided_views: bool = True, **dims: int) -> MemoryPlan:
    """Plan the arena of ``graph`` for these free-dimension values (``batch_size`` binds ``batch``).

    To re-plan cheaply for other sizes, keep a :class:`MemoryPlanner` and call its ``plan``.
    """
    bindings = resolve_bindings(graph, batch_size, dims)
    planner = MemoryPlanner(graph, alignment=alignment, schedule=schedule, inplace=inplace,
                            concat_in_place=concat_in_place, strided_views=strided_views, bindings=bindings)
    return planner.plan(batch_size, **dims)
