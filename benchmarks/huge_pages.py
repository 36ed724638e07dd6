"""Whole models with and without transparent huge pages: two instances of one build, in one process.

::

    python -m benchmarks.huge_pages
    python -m benchmarks.huge_pages --models residual --apps ResNet50 --batch 1,32 --threads 1,2

The default allocator of the C runtime advises its blocks of 2 MiB and more (packed weights, the
arena) as transparent huge pages (``gc_options_t.huge_pages``, on by default; ``Library.instance(...,
huge_pages=False)`` turns it off). For each model (bundled examples and Keras applications at their
design input size, as ``benchmarks.run`` builds them) one library is built and two instances of it
are used, one each way (the build's own and one with ``huge_pages=False``); their outputs are compared
(they run the same code: the same bits), and ``run`` is timed on the same inputs, interleaved
(:func:`graphc.bench.measure`). The SGEMM side of the same question: ``python -m benchmarks.gemm
--before 4k-pages``. Writes
``benchmarks/results/<date>-huge-pages.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.switched_builds import machine_line, write_report

DEFAULT_MODELS = ("separable_conv_bn", "residual", "inception", "conv1d_text", "mlp")
DEFAULT_APPS = ("ResNet50", "MobileNetV2", "EfficientNetB0", "InceptionV3", "TransformerEncoder")


def measure_model(name: str, model, batch: int, threads: int, repeat: int, precision: str) -> dict:
    import graphc
    from graphc import examples
    from graphc.bench import _Runner, benchmark_feeds, measure

    cm = graphc.build(model, "native", threads=threads, precision=precision)
    feeds = benchmark_feeds(name if name in examples.EXAMPLES else model, batch, model=model)
    arrays = [np.ascontiguousarray(feeds[n], dtype=info.dtype)
              for n, info in zip(cm.graph.inputs, cm.library.inputs)]
    huge = cm.instance  # made by the build with the default options
    small = cm.library.instance(threads, huge_pages=False)
    try:
        a, b = huge.run(arrays), small.run(arrays)
        same_bits = all(p.tobytes() == q.tobytes() for p, q in zip(a, b))
        res = measure([_Runner("huge", lambda: huge.run(arrays)), _Runner("small", lambda: small.run(arrays))],
                      repeat, min_sample_s=0.02, settle_s=0.1 if threads > 1 else 0.0)
    finally:
        small.close()
    h, s = res["huge"].median_ms, res["small"].median_ms
    return {"model": name, "batch": batch, "threads": threads, "precision": precision, "huge_ms": h,
            "small_ms": s, "small_over_huge": s / h, "same_bits": same_bits}


def _row(r: dict) -> str:
    return (f"| {r['model']} | {r['batch']} | {r['threads']} | {r['precision']} | {r['small_ms']:.3f} | "
            f"{r['huge_ms']:.3f} | {r['small_over_huge']:.3f} | {'same bits' if r['same_bits'] else 'DIFFER'} |")


def to_markdown(machine: dict, rows: Sequence[dict], command: str) -> str:
    lines = ["# Instances with 4 KiB pages against transparent huge pages", "",
             machine_line(machine) + f"; transparent huge pages: {machine.get('transparent_huge_pages')}. "
             f"`{command}`: one build, two instances (`huge_pages=False` and the default), latency medians in "
             "ms, interleaved; 4 KiB / huge above 1 means huge pages are faster.", "",
             "| model | batch | threads | precision | 4 KiB pages ms | huge pages ms | 4 KiB / huge | outputs |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    return "\n".join(lines + [_row(r) for r in rows]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="bundled examples ('' for none)")
    p.add_argument("--apps", default=",".join(DEFAULT_APPS), help="Keras applications or TransformerEncoder")
    p.add_argument("--batch", default="1")
    p.add_argument("--threads", default="1")
    p.add_argument("--precision", default="float32", help="float32 or bf16")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from benchmarks.run import _keras_model
    from graphc import examples
    from graphc.bench import machine_info

    makers = [(n, lambda n=n: examples.build(n, seed=0)) for n in args.models.split(",") if n] + \
             [(n, lambda n=n: _keras_model(n)) for n in args.apps.split(",") if n]
    command = "python -m benchmarks.huge_pages " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GRAPHC_CACHE_DIR"] = str(Path(tmp) / "cache")
        print(to_markdown({}, [], command).splitlines()[-2])
        for name, make in makers:
            model = make()
            for batch in [int(b) for b in args.batch.split(",")]:
                for threads in [int(t) for t in args.threads.split(",")]:
                    rows.append(measure_model(name, model, batch, threads, args.repeat, args.precision))
                    print(_row(rows[-1]), flush=True)
    machine = machine_info()
    write_report(args.out, "huge-pages", to_markdown(machine, rows, command.strip()), machine, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
