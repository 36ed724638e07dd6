"""The pass manager: named passes, pipelines, fixed points, and the tooling around them.

A pass is a plain function ``run(graph) -> bool`` that rewrites a graph in place and says
whether it changed anything (XLA's ``HloPassInterface``, numba's compiler passes); it must
return exactly ``True`` or ``False``. :func:`register_pass` records it by name. A
:class:`Pipeline` is an ordered list of passes and nested pipelines; :class:`FixedPoint`
repeats a pipeline until a whole round changes nothing, at most ``limit`` rounds (25, as
XLA's ``HloPassFix``).

:class:`PassManager` runs a pipeline with the instrumentation compiler engineers rely on:

- **verification** (structure and every op's shape rule) before the first pass and after
  every pass, in debug mode: ``verify=True`` or the environment variable
  ``GRAPHC_VERIFY_PASSES=1``. Debug mode also catches a pass that changed the graph but
  returned ``False``;
- **timing** of every pass, and a count of what each pass did (:func:`note`), gathered in
  a :class:`PassReport`;
- **printing** the IR before or after chosen passes: ``print_before``/``print_after`` (pass
  names, or ``"all"``) or ``GRAPHC_PRINT_BEFORE``/``GRAPHC_PRINT_AFTER`` (comma-separated);
- **disabling** passes by name: ``disable`` or ``GRAPHC_DISABLE`` (comma-separated);
- **error context**: any exception inside a pass is re-raised as :class:`PassError` naming
  the pass and the op (and the user's layer) it was rewriting, which passes declare with
  :func:`working_on`.
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Union

from graphc.ir.graph import Graph, IRError, Op
from graphc.ir.printer import format_graph
from graphc.ir.verify import verify as _verify_ir
from graphc.ops.registry import infer_op

PassFn = Callable[[Graph], bool]


class PassError(IRError):
    """A pass failed, or left an invalid graph; the message names the pass and the op/layer."""

    def __init__(self, message: str, *, pass_name: str, op: Op | None = None):
        super().__init__(message)
        self.pass_name = pass_name
        self.op = op


@dataclass(frozen=True)
class Pass:
    """A registered pass: its name, its function and a one-line description."""

    name: str
    fn: PassFn
    doc: str

    def __call__(self, graph: Graph) -> bool:
        return self.fn(graph)


PASSES: dict[str, Pass] = {}


def register_pass(name: str | None = None) -> Callable[[PassFn], PassFn]:
    """Decorator: register ``fn`` as pass ``name`` (default: the function's name).

    The function is returned unchanged, so a pass can also be called directly.
    """

    def decorate(fn: PassFn) -> PassFn:
        key = name or fn.__name__
        if key in PASSES:
            raise ValueError(f"pass {key!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        PASSES[key] = Pass(key, fn, doc[0] if doc else "")
        return fn

    return decorate


def get_pass(name: str) -> Pass:
    try:
        return PASSES[name]
    except KeyError:
        raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(sorted(PASSES))}") from None


Step = Union[str, "Pipeline", "FixedPoint"]


@dataclass
class Pipeline:
    """An ordered list of steps: pass names, pipelines, fixed points."""

    name: str
    steps: list[Step]

    def pass_names(self) -> list[str]:
        """Every pass this pipeline can run, in order, without repeats."""
        out: list[str] = []
        for step in self.steps:
            names = [step] if isinstance(step, str) else step.pass_names()
            out.extend(n for n in names if n not in out)
        return out


@dataclass
class FixedPoint:
    """Run ``pipeline`` again and again until one whole round changes nothing (at most ``limit``)."""

    pipeline: Pipeline
    limit: int = 25

    @property
    def name(self) -> str:
        return f"fixed_point({self.pipeline.name})"

    def pass_names(self) -> list[str]:
        return self.pipeline.pass_names()


# ---------------------------------------------------------------------------- run state
@dataclass
class PassStats:
    """What one pass did over a whole pipeline run."""

    name: str
    runs: int = 0
    changed: int = 0
    seconds: float = 0.0
    events: Counter = field(default_factory=Counter)


@dataclass
class PassReport:
    """Timings and effects of one pipeline run."""

    pipeline: str
    ops_before: dict[str, int]
    ops_after: dict[str, int] = field(default_factory=dict)
    passes: dict[str, PassStats] = field(default_factory=dict)
    disabled: list[str] = field(default_factory=list)
    fixed_point_rounds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def events(self) -> Counter:
        """Every event noted by any pass, as ``"pass: event" -> count``."""
        out: Counter = Counter()
        for stats in self.passes.values():
            for event, n in stats.events.items():
                out[f"{stats.name}: {event}"] += n
        return out

    def format(self) -> str:
        """A table: one line per pass (runs, changes, time, events), then op counts."""
        lines = [f"pipeline {self.pipeline}: {sum(self.ops_before.values())} ops -> "
                 f"{sum(self.ops_after.values())} ops in {self.seconds * 1e3:.1f} ms"]
        lines.append(f"  {'pass':<28} {'runs':>5} {'changed':>8} {'ms':>8}  events")
        for s in self.passes.values():
            events = ", ".join(f"{k}={v}" for k, v in sorted(s.events.items()))
            lines.append(f"  {s.name:<28} {s.runs:>5} {s.changed:>8} {s.seconds * 1e3:>8.2f}  {events}")
        for name in self.disabled:
            lines.append(f"  {name:<28} disabled")
        keys = sorted(set(self.ops_before) | set(self.ops_after))
        lines.append("  op counts (before -> after): " + ", ".join(
            f"{k} {self.ops_before.get(k, 0)}->{self.ops_after.get(k, 0)}" for k in keys
            if self.ops_before.get(k, 0) != self.ops_after.get(k, 0)))
        return "\n".join(lines)


@dataclass
class _Active:
    stats: PassStats | None = None
    op: Op | None = None


_ACTIVE: contextvars.ContextVar[_Active | None] = contextvars.ContextVar("graphc_active_pass", default=None)


def working_on(op: Op | None) -> None:
    """Declare the op a pass is rewriting now (named by :class:`PassError` if the pass fails)."""
    active = _ACTIVE.get()
    if active is not None:
        active.op = op


def note(event: str, n: int = 1) -> None:
    """Count an event of the running pass (``"conv+bias+relu"``); shown in the report."""
    active = _ACTIVE.get()
    if active is not None and active.stats is not None:
        active.stats.events[event] += n


# ---------------------------------------------------------------------------- the manager
def _env_list(var: str) -> list[str]:
    raw = os.environ.get(var, "")
    return [s.strip() for s in raw.split(",") if s.strip()]


def _env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no", "off")


def _fingerprint(graph: Graph) -> tuple:
    return (format_graph(graph), tuple(sorted((k, id(v)) for k, v in graph.constants.items())))


def _where(op: Op | None) -> str:
    if op is None:
        return ""
    return f" on op {op.id!r} ({op.type}" + (f", layer {op.layer!r})" if op.layer else ")")


class PassManager:
    """Runs pipelines with verification, timing, printing, disabling and error context.

    Arguments left as ``None`` come from the environment (``GRAPHC_VERIFY_PASSES``,
    ``GRAPHC_PRINT_BEFORE``, ``GRAPHC_PRINT_AFTER``, ``GRAPHC_DISABLE``).
    """

    def __init__(self, *, verify: bool | None = None, print_before: Iterable[str] | None = None,
                 print_after: Iterable[str] | None = None, disable: Iterable[str] | None = None,
                 stream: IO[str] | None = None):
        self.verify = _env_flag("GRAPHC_VERIFY_PASSES") if verify is None else bool(verify)
        self.print_before = set(_env_list("GRAPHC_PRINT_BEFORE") if print_before is None else print_before)
        self.print_after = set(_env_list("GRAPHC_PRINT_AFTER") if print_after is None else print_after)
        self.disable = set(_env_list("GRAPHC_DISABLE") if disable is None else disable)
        self.stream = stream
        for what, names in (("print_before", self.print_before), ("print_after", self.print_after),
                            ("disable", self.disable)):
            for n in names:
                if n != "all" or what == "disable":
                    get_pass(n)  # unknown names are errors, not silent no-ops

    def run(self, graph: Graph, pipeline: Pipeline) -> PassReport:
        """Run ``pipeline`` on ``graph`` in place; returns the report."""
        report = PassReport(pipeline.name, graph.op_counts())
        report.disabled = sorted(n for n in self.disable if n in pipeline.pass_names())
        start = time.perf_counter()
        if self.verify:
            self._check(graph, None, "before the first pass")
        self._run_steps(graph, pipeline, report)
        report.seconds = time.perf_counter() - start
        report.ops_after = graph.op_counts()
        return report

    # ------------------------------------------------------------------ internals
    def _run_steps(self, graph: Graph, pipeline: Pipeline, report: PassReport) -> bool:
        changed = False
        for step in pipeline.steps:
            if isinstance(step, str):
                changed |= self._run_pass(graph, get_pass(step), report)
            elif isinstance(step, Pipeline):
                changed |= self._run_steps(graph, step, report)
            elif isinstance(step, FixedPoint):
                changed |= self._run_fixed_point(graph, step, report)
            else:
                raise TypeError(f"pipeline {pipeline.name!r} has a step of type {type(step).__name__}")
        return changed

    def _run_fixed_point(self, graph: Graph, fp: FixedPoint, report: PassReport) -> bool:
        any_change = False
        for rounds in range(1, fp.limit + 1):
            if not self._run_steps(graph, fp.pipeline, report):
                report.fixed_point_rounds[fp.name] = rounds
                return any_change
            any_change = True
        report.fixed_point_rounds[fp.name] = fp.limit
        warnings.warn(f"{fp.name} still changed the graph after {fp.limit} rounds; stopped there",
                      RuntimeWarning, stacklevel=2)
        return any_change

    def _emit(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr)

    def _run_pass(self, graph: Graph, p: Pass, report: PassReport) -> bool:
        if p.name in self.disable:
            return False
        stats = report.passes.setdefault(p.name, PassStats(p.name))
        if "all" in self.print_before or p.name in self.print_before:
            self._emit(f"// ----- IR before pass {p.name}\n{graph}")
        before = _fingerprint(graph) if self.verify else None
        active = _Active(stats)
        token = _ACTIVE.set(active)
        t0 = time.perf_counter()
        try:
            changed = p.fn(graph)
        except PassError:
            raise
        except Exception as exc:
            raise PassError(f"pass {p.name!r} failed{_where(active.op)}: {type(exc).__name__}: {exc}",
                            pass_name=p.name, op=active.op) from exc
        finally:
            stats.seconds += time.perf_counter() - t0
            _ACTIVE.reset(token)
        if type(changed) is not bool:
            raise PassError(f"pass {p.name!r} returned {changed!r}; a pass must return True or False",
                            pass_name=p.name)
        stats.runs += 1
        stats.changed += int(changed)
        if self.verify:
            if not changed and _fingerprint(graph) != before:
                raise PassError(f"pass {p.name!r} changed the graph but returned False", pass_name=p.name)
            self._check(graph, p.name, f"after pass {p.name!r}")
        if "all" in self.print_after or p.name in self.print_after:
            self._emit(f"// ----- IR after pass {p.name}{'' if changed else ' (unchanged)'}\n{graph}")
        return changed

    def _check(self, graph: Graph, pass_name: str | None, when: str) -> None:
        try:
            _verify_ir(graph, infer_op)
        except IRError as exc:
            raise PassError(f"invalid IR {when}: {exc}", pass_name=pass_name or "") from exc
