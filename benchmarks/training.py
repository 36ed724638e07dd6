"""Training-step benchmark: graphc's native step against PyTorch eager, torch.compile and jitted JAX.

::

    python -m benchmarks.training               # every seed model but stereo_xception, batch 32, 1 and 2 threads
    python -m benchmarks.training --models mlp,residual --threads 1 --repeat 5
    GRAPHC_BENCH_JAX_PYTHON=/path/to/python python -m benchmarks.training   # JAX from another environment

One training step (forward, MSE loss on every output, backward, RMSprop update) per engine, see
:mod:`graphc.bench.training`: graphc through ``train_on_batch`` and through ``Instance.train_step``,
PyTorch eager, ``torch.compile`` and a ``jax.jit`` step written with Keras 3 on the jax backend
(in a child process that takes its turn in the same timing rounds). The markdown table is printed
and written to ``benchmarks/results/<date>-training.md`` with the raw samples as ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("graphc-native-step", "graphc-native-raw", "torch", "torch-compile", "jax")
EXCLUDED = {"stereo_xception": "two 250x250 Xception towers: seconds per training step at batch 32 on 2 cores, "
                               "minutes of torch.compile per thread count"}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated bundled example names (default: every one but "
                                                  + ", ".join(EXCLUDED) + ")")
    p.add_argument("--batch", default="32", help="batch sizes (default 32)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"engines (default {','.join(ENGINES)}; "
                                                                "'graphc' adds the reference interpreter)")
    p.add_argument("--repeat", type=int, default=15, help="measured rounds per engine (default 15)")
    p.add_argument("--min-sample-ms", type=float, default=20.0,
                   help="a sample is a block of steps lasting at least this long (default 20 ms)")
    p.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>-training.md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def to_markdown(report) -> str:
    """Machine, versions, load, settings and notes, then the training tables."""
    from graphc.bench.training import format_training

    m = report.machine
    versions = dict(m.get("versions", {}))
    for case in report.training:
        versions.update(case.versions)
    lines = ["# graphc training-step benchmark", "",
             f"- date: {m.get('date', '?')}",
             f"- CPU: {m.get('cpu', '?')} ({m.get('logical_cpus', '?')} logical CPUs; {m.get('cpu_features', '')}); "
             f"load average at the start: {m.get('load_average', '?')}, at the end: {m.get('load_average_end', '?')}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
             f"- settings: {report.settings}"]
    lines += [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n\n" + format_training(report.training) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from graphc import examples
    from graphc.bench import BenchError, BenchReport, machine_info, run_training_benchmark

    names = _csv(args.models) if args.models else [n for n in examples.names() if n not in EXCLUDED]
    unknown = [n for n in names if n not in examples.names()]
    if unknown:
        print(f"unknown model(s) {unknown}; bundled examples are: {', '.join(examples.names())}", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    report = BenchReport(machine=machine_info(),
                         settings={"batch": args.batch, "threads": args.threads, "engines": args.engines,
                                   "repeat": args.repeat, "min_sample_ms": args.min_sample_ms})
    try:
        for name in names:
            report.extend(run_training_benchmark(name, args.batch, args.threads, repeat=args.repeat,
                                                 min_sample_s=args.min_sample_ms / 1e3, engines=args.engines,
                                                 progress=say))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report.machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    skipped = [f"{n} ({why})" for n, why in EXCLUDED.items() if n not in names]
    if skipped:
        report.notes.append("not run: " + "; ".join(skipped))
    report.notes.append(f"load average at the end: {report.machine['load_average_end']}; "
                        f"whole run {time.perf_counter() - started:.0f} s")
    text = to_markdown(report)
    print(text)
    if not args.no_write:
        path = Path(args.out) if args.out else RESULTS / f"{_dt.date.today().isoformat()}-training.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
        say(f"wrote {path} and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
