"""What the one-kernel A/B benchmarks (``softmax``, ``layer_norm``, ``pooling``) share: two compiled
calls timed interleaved in this process, and the markdown table written under ``results/``."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from pathlib import Path

from graphc.bench import _Runner, machine_info, measure

RESULTS = Path(__file__).resolve().parent / "results"


def time_pair(before: Callable, after: Callable, repeat: int, names: tuple[str, str] = ("before", "after")
              ) -> tuple[float, float]:
    """Median ms per call of ``before`` and ``after``, ``repeat`` interleaved rounds (one thread each)."""
    res = measure([_Runner(names[0], before), _Runner(names[1], after)], repeat)
    return res[names[0]].median_ms, res[names[1]].median_ms


def write_table(out: Path | None, name: str, title: str, note: str, header: Sequence[str], numeric_from: int,
                lines: Sequence[str], repeat: int) -> Path:
    """``# title``, the machine, ``note``, then the table (columns from ``numeric_from`` right-aligned), to
    ``out`` (default ``results/<date>-<name>.md``); prints where."""
    machine = machine_info()
    align = ["---"] * numeric_from + ["---:"] * (len(header) - numeric_from)
    text = "\n".join([
        f"# {title}", "",
        f"{machine.get('date')}; {machine.get('cpu')}; 1 thread; medians of {repeat} interleaved rounds. {note}", "",
        "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |", *lines, ""])
    out = out or RESULTS / f"{_dt.date.today().isoformat()}-{name}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return out
