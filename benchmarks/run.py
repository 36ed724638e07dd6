"""Benchmark runner: graphc native vs onnxruntime vs PyTorch eager, tables written to benchmarks/results/.

::

    python -m benchmarks.run                                  # every bundled example but stereo_xception
    python -m benchmarks.run --models mlp,inception --batch 1,32 --threads 1,2 --vs onnxruntime,torch
    python -m benchmarks.run --models inception --profile --profile-batch 32   # per-layer times too
    python -m benchmarks.run --profile residual,inception --train mlp,conv1d_text   # all models, plus these
    python -m benchmarks.run --models mlp,conv1d_text --train --no-inference  # training steps only

Everything runs in this one process (same threads, same batch, same inputs for every engine);
see :mod:`graphc.bench` for how the timing copes with a noisy machine. The markdown report is
printed and written to ``benchmarks/results/<date>.md`` (``<date>-2.md``... if taken) with the
raw samples beside it as ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_EXCLUDE = ("stereo_xception",)  # two 250x250 Xception towers: minutes per call at batch 32 on 2 cores


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None,
                   help="comma-separated bundled example names (default: all but " + ", ".join(DEFAULT_EXCLUDE) + ")")
    p.add_argument("--batch", default="1,32", help="batch sizes (default 1,32)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--vs", default="onnxruntime,torch", help="engines to compare with (default onnxruntime,torch)")
    p.add_argument("--no-unfused", action="store_true", help="skip the level-0 (unfused) native build")
    p.add_argument("--repeat", type=int, default=10, help="measured rounds per engine (default 10)")
    p.add_argument("--profile", nargs="?", const="", default=None, metavar="MODELS",
                   help="also time every layer alone, where the time goes (of MODELS, default: every model)")
    p.add_argument("--profile-batch", type=int, default=32, help="batch size of the per-layer profile")
    p.add_argument("--profile-threads", type=int, default=1, help="thread count of the per-layer profile")
    p.add_argument("--train", nargs="?", const="", default=None, metavar="MODELS",
                   help="also compare training steps (of MODELS, default: every model)")
    p.add_argument("--train-batch", default="32", help="batch sizes of the training comparison (default 32)")
    p.add_argument("--train-repeat", type=int, default=5, help="measured rounds per training engine (default 5)")
    p.add_argument("--no-inference", action="store_true", help="skip the inference comparison")
    p.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>.md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _report_path(out: str | None) -> Path:
    if out:
        return Path(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = _dt.date.today().isoformat()
    path, k = RESULTS / f"{stem}.md", 2
    while path.exists():
        path, k = RESULTS / f"{stem}-{k}.md", k + 1
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from graphc import examples
    from graphc.bench import (
        BenchError,
        BenchReport,
        machine_info,
        profile_layers,
        run_benchmark,
        run_training_benchmark,
    )

    names = _csv(args.models) if args.models else [n for n in examples.names() if n not in DEFAULT_EXCLUDE]
    profiled = names if args.profile == "" else _csv(args.profile or "")
    trained = names if args.train == "" else _csv(args.train or "")
    names += [n for n in profiled + trained if n not in names]
    inference = set() if args.no_inference else set(_csv(args.models) if args.models else names)
    unknown = [n for n in names if n not in examples.names()]
    if unknown:
        print(f"unknown model(s) {unknown}; bundled examples are: {', '.join(examples.names())}", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    report = BenchReport(machine=machine_info(),
                         settings={"repeat": args.repeat, "batch": args.batch, "threads": args.threads, "vs": args.vs,
                                   "unfused": not args.no_unfused})
    try:
        for name in names:
            if name in inference:
                report.extend(run_benchmark(name, args.batch, args.threads, args.vs, unfused=not args.no_unfused,
                                            repeat=args.repeat, progress=say))
            if name in profiled:
                report.profiles.append(profile_layers(name, batch=args.profile_batch, threads=args.profile_threads,
                                                      vs=args.vs, repeat=max(3, args.repeat // 2), progress=say))
            if name in trained:
                report.extend(run_training_benchmark(name, args.train_batch, args.threads, repeat=args.train_repeat,
                                                     progress=say))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import os

    report.machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report.notes.append(f"load average at the end: {report.machine['load_average_end']}; "
                        f"whole run {time.perf_counter() - started:.0f} s")
    text = report.to_markdown()
    print(text)
    if not args.no_write:
        path = _report_path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
        say(f"wrote {path} and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
