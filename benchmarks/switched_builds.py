"""What the per-shape A/B benchmarks (``conv_winograd``, ``depthwise``) share: a native build under one
setting of a ``GRAPHC_*`` switch (part of the build cache key, so both builds live side by side), and the
report written as markdown with its JSON beside it."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def build_with(model, threads: int, variable: str, value: str):
    """``graphc.build(model, "native", threads=threads)`` with ``variable=value`` in the environment (restored
    after)."""
    import graphc

    before = os.environ.get(variable)
    os.environ[variable] = value
    try:
        return graphc.build(model, "native", threads=threads)
    finally:
        if before is None:
            del os.environ[variable]
        else:
            os.environ[variable] = before


def write_report(out: Path | None, name: str, markdown: str, machine: dict, rows: list) -> Path:
    """``markdown`` to ``out`` (default ``results/<date>-<name>.md``), ``{"machine", "rows"}`` beside it as
    JSON; prints where."""
    out = out or RESULTS / f"{_dt.date.today().isoformat()}-{name}.md"
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    return out
