"""The median of several ``benchmarks.run`` results: one ratio per model, batch and thread count.

::

    python -m benchmarks.median_of_runs benchmarks/results/2026-12-05b-zen4.json ... --out results.md

On a shared machine one run's ratios move by up to 0.1 from one run to the next (a process's second
vCPU is at times much slower, for every engine alike); runs minutes apart and their median per case
say more than any one of them. Writes (or prints) a markdown table of ``--ratio`` (default
``ort/graphc``) per run and their median, with graphc's median ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def table(paths: list[Path], ratio: str) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    keys = list(dict.fromkeys((c["model"], c["batch"], c["threads"]) for r in runs for c in r["cases"]))
    lines = [f"Median of {len(runs)} runs of `python -m benchmarks.run` ({', '.join(p.name for p in paths)}): "
             f"`{ratio}` per run, then the median; graphc ms: the median of the runs' medians.", "",
             "| model | batch | threads | graphc ms | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
             + f" | median {ratio} |",
             "|---|---:|---:|---:|" + "---:|" * (len(runs) + 1)]
    for key in keys:
        cases = [c for r in runs for c in r["cases"] if (c["model"], c["batch"], c["threads"]) == key]
        values = [c["ratios"].get(ratio) for c in cases]
        ms = [c["results"]["graphc"]["median_ms"] for c in cases if c["results"].get("graphc", {}).get("median_ms")]
        cells = " | ".join("—" if v is None else f"{v:.2f}" for v in values)
        known = [v for v in values if v is not None]
        median = f"**{statistics.median(known):.2f}**" if known else "—"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {statistics.median(ms):.3g} | {cells} | {median} |"
                     if ms else f"| {key[0]} | {key[1]} | {key[2]} | — | {cells} | {median} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="JSON files written by benchmarks.run")
    ap.add_argument("--ratio", default="ort/graphc")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    text = table(args.results, args.ratio)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
