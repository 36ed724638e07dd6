"""What the one-kernel A/B benchmarks (``softmax``, ``layer_norm``, ``pooling``) share: two compiled
calls timed interleaved in this process, and the markdown table written under ``results/``."""

from __future__ import annotations

import datetime as _dt
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.vector_math import _module_from_git
from graphc.bench import _Runner, machine_info, measure

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def function_of(commit: str, module: types.ModuleType, name: str) -> Iterator[None]:
    """Kernels compiled inside get ``module.name`` as it was at ``commit`` (its module read from git and
    loaded beside today's)."""
    path = module.__name__.replace(".", "/") + ".py"
    with tempfile.TemporaryDirectory() as tmp:
        old = _module_from_git(commit, path, f"{module.__name__.rsplit('.', 1)[-1]}_before", Path(tmp))
    saved = getattr(module, name)
    setattr(module, name, getattr(old, name))
    try:
        yield
    finally:
        setattr(module, name, saved)


def time_pair(before: Callable, after: Callable, repeat: int, names: tuple[str, str] = ("before", "after")
              ) -> tuple[float, float]:
    """Median ms per call of ``before`` and ``after``, ``repeat`` interleaved rounds (one thread each)."""
    res = measure([_Runner(names[0], before), _Runner(names[1], after)], repeat)
    return res[names[0]].median_ms, res[names[1]].median_ms


def write_table(out: Path | None, name: str, title: str, note: str, header: Sequence[str], numeric_from: int,
                lines: Sequence[str], repeat: int, threads: str = "1 thread") -> Path:
    """``# title``, the machine, ``note``, then the table (columns from ``numeric_from`` right-aligned), to
    ``out`` (default ``results/<date>-<name>.md``); prints where."""
    machine = machine_info()
    align = ["---"] * numeric_from + ["---:"] * (len(header) - numeric_from)
    text = "\n".join([
        f"# {title}", "",
        f"{machine.get('date')}; {machine.get('cpu')}; {threads}; medians of {repeat} interleaved rounds. {note}", "",
        "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |", *lines, ""])
    out = out or RESULTS / f"{_dt.date.today().isoformat()}-{name}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return out
