"""Whole models built two ways by a ``GRAPHC_*`` switch: compile time and latency of each, in one process.

::

    python -m benchmarks.switch_models GRAPHC_LLVM_LSR=1
    python -m benchmarks.switch_models GRAPHC_GEMM_FUSED_EPILOGUE=0 --models residual --apps ResNet50 --threads 1,2

For each model (bundled examples and Keras applications at their design input size, as
``benchmarks.run`` builds them), one process builds the *default* library (the switch unset) and the
*switched* one (the switch set as given) into one fresh cache (the switches are in the build cache
key, so both compile cold; the C runtime is compiled once before), compares their outputs, and times
``predict`` on the same inputs, interleaved (:func:`graphc.bench.measure`). Compile times are one build
each (CPU seconds of this process and its children are printed beside wall seconds: the machine may
be shared). Writes ``benchmarks/results/<date>-switch-<switch>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.switched_builds import build_with, machine_line, write_report

DEFAULT_MODELS = ("separable_conv_bn", "residual", "inception", "conv1d_text", "mlp")
DEFAULT_APPS = ("MobileNetV2", "EfficientNetB0", "ResNet50", "TransformerEncoder")


def _timed_build(model, threads: int, variable: str, value: str | None):
    """(compiled model, wall s, CPU s with children) of one build; ``value`` None builds with the switch
    unset."""
    import graphc

    t0, c0 = time.perf_counter(), os.times()
    if value is None:
        before = os.environ.pop(variable, None)
        try:
            cm = graphc.build(model, "native", threads=threads)
        finally:
            if before is not None:
                os.environ[variable] = before
    else:
        cm = build_with(model, threads, variable, value)
    c1 = os.times()
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system) - \
          (c0.user + c0.system + c0.children_user + c0.children_system)
    return cm, time.perf_counter() - t0, cpu


def measure_model(name: str, model, variable: str, value: str, batch: int, threads: int, repeat: int,
                  cache: Path) -> dict:
    from graphc import examples
    from graphc.bench import _Runner, benchmark_feeds, measure

    shutil.rmtree(cache / "native", ignore_errors=True)  # both builds cold (the C runtime stays)
    default, default_wall, default_cpu = _timed_build(model, threads, variable, None)
    switched, switched_wall, switched_cpu = _timed_build(model, threads, variable, value)
    # benchmarks.run's inputs: a bundled example's own (free lengths at their design sizes), else random
    feeds = benchmark_feeds(name if name in examples.EXAMPLES else model, batch, model=model)
    a, b = list(default.run(feeds).values()), list(switched.run(feeds).values())
    same_bits = all(p.tobytes() == q.tobytes() for p, q in zip(a, b))
    diff = max(float(np.max(np.abs(p.astype(np.float64) - q.astype(np.float64)))) if p.size else 0.0
               for p, q in zip(a, b))
    res = measure([_Runner("default", lambda: default.run(feeds)), _Runner("switched", lambda: switched.run(feeds))],
                  repeat, min_sample_s=0.02, settle_s=0.1 if threads > 1 else 0.0)
    da, sa = res["default"].median_ms, res["switched"].median_ms
    return {"model": name, "batch": batch, "threads": threads, "default_ms": da, "switched_ms": sa,
            "default_over_switched": da / sa, "default_build_s": default_wall, "switched_build_s": switched_wall,
            "default_build_cpu_s": default_cpu, "switched_build_cpu_s": switched_cpu, "same_bits": same_bits,
            "max_abs_diff": diff}


def _row(r: dict) -> str:
    outputs = "same bits" if r["same_bits"] else f"differ by {r['max_abs_diff']:.2e}"
    return (f"| {r['model']} | {r['batch']} | {r['threads']} | {r['default_ms']:.3f} | {r['switched_ms']:.3f} | "
            f"{r['default_over_switched']:.3f} | {r['default_build_s']:.2f} ({r['default_build_cpu_s']:.2f}) | "
            f"{r['switched_build_s']:.2f} ({r['switched_build_cpu_s']:.2f}) | "
            f"{outputs} |")


def to_markdown(machine: dict, rows: Sequence[dict], switch: str) -> str:
    lines = [f"# Models built with `{switch}` against the default", "",
             machine_line(machine) + f". `python -m benchmarks.switch_models {switch}`: both builds in one "
             "process, latency medians in ms (interleaved), default / switched above 1 means the switch is "
             "faster; build seconds wall (CPU with children), one cold build each.", "",
             "| model | batch | threads | default ms | switched ms | default / switched | default build s | "
             "switched build s | outputs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    return "\n".join(lines + [_row(r) for r in rows]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("switch", help="VARIABLE=VALUE, a GRAPHC_* build switch")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="bundled examples ('' for none)")
    p.add_argument("--apps", default=",".join(DEFAULT_APPS), help="Keras applications or TransformerEncoder")
    p.add_argument("--batch", default="1")
    p.add_argument("--threads", default="1")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    variable, sep, value = args.switch.partition("=")
    if not sep or not variable.startswith("GRAPHC_"):
        p.error(f"expected GRAPHC_NAME=VALUE, got {args.switch!r}")
    import graphc
    from benchmarks.run import _keras_model
    from graphc import examples
    from graphc.bench import machine_info

    makers = [(n, lambda n=n: examples.build(n, seed=0)) for n in args.models.split(",") if n] + \
             [(n, lambda n=n: _keras_model(n)) for n in args.apps.split(",") if n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        os.environ["GRAPHC_CACHE_DIR"] = str(cache)
        from graphc.backends.llvm import toolchain

        toolchain.runtime_objects()
        graphc.build(examples.build("mlp", seed=0), "native")  # the first build's imports timed for no one
        print(to_markdown({}, [], args.switch).splitlines()[-2])
        for name, make in makers:
            model = make()
            for batch in [int(b) for b in args.batch.split(",")]:
                for threads in [int(t) for t in args.threads.split(",")]:
                    rows.append(measure_model(name, model, variable, value, batch, threads, args.repeat,
                                               cache))
                    print(_row(rows[-1]), flush=True)
    machine = machine_info()
    slug = variable.removeprefix("GRAPHC_").lower() + "-" + value
    write_report(args.out, f"switch-{slug}", to_markdown(machine, rows, args.switch), machine, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
