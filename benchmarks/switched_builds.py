"""What the per-shape A/B benchmarks (``conv_winograd``, ``depthwise``) share: a native build under one
setting of a ``GRAPHC_*`` switch (part of the build cache key, so both builds live side by side), and the
report written as markdown with its JSON beside it."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from collections.abc import Callable
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


def machine_line(machine: dict) -> str:
    """The start of a report's machine line: date, CPU, logical CPUs and load average (``machine_info()``'s)."""
    return (f"{machine.get('date')}; {machine.get('cpu')}; {machine.get('logical_cpus')} logical CPUs; load "
            f"{machine.get('load_average')}")


def write_report(out: Path | None, name: str, markdown: str, machine: dict, rows: list) -> Path:
    """``markdown`` to ``out`` (default ``results/<date>-<name>.md``), ``{"machine", "rows"}`` beside it as
    JSON; prints where."""
    out = out or RESULTS / f"{_dt.date.today().isoformat()}-{name}.md"
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    return out


def main_over_shapes(argv, description: str, name: str | Callable[[dict], str], shapes: list[tuple],
                     measure_shape: Callable, to_markdown: Callable, *, batch: str = "1",
                     skip: Callable[[tuple, int], bool] = lambda shape, batch: False,
                     add_options: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The command line of a per-shape A/B benchmark: ``--batch``, ``--threads``, ``--repeat``, ``--out``,
    ``--match TEXT`` (only the shapes whose items, as text, contain it: ``--match InceptionV3``);
    ``shapes`` are tuples whose last item says where the shape comes from; each row is
    ``measure_shape(*shape[:-1], batch, threads, repeat, **options)``, printed as it comes and reported by
    ``to_markdown(machine, rows, {shape[:-1]: shape[-1]}, **options)``, where ``options`` are the ones
    ``add_options`` adds to the parser; ``name`` (of the report) may depend on them."""
    from graphc.bench import machine_info

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch", default=batch)
    p.add_argument("--threads", default="1")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--match", default="", help="only the shapes whose items, as text, contain this")
    common = set(vars(p.parse_args([])))
    if add_options is not None:
        add_options(p)
    args = p.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in common}
    shapes = [shape for shape in shapes if args.match in " ".join(map(str, shape))]
    sources = {shape[:-1]: shape[-1] for shape in shapes}
    rows = []
    for b in [int(x) for x in args.batch.split(",")]:
        for threads in [int(t) for t in args.threads.split(",")]:
            for shape in shapes:
                if skip(shape, b):
                    continue
                rows.append(measure_shape(*shape[:-1], b, threads, args.repeat, **options))
                print(to_markdown({}, rows[-1:], sources, **options).splitlines()[-1], flush=True)
    machine = machine_info()
    name = name if isinstance(name, str) else name(options)
    write_report(args.out, name, to_markdown(machine, rows, sources, **options), machine, rows)
    return 0
