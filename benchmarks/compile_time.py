"""Native compile time per model: ``graphc.build(model, "native")`` with cold code and library caches.

``GRAPHC_CACHE_DIR`` is a fresh directory, its ``native`` entries removed before every build; the
C runtime is compiled into it once beforehand (as on any machine after graphc's first build; its
time is printed separately). Each build is timed in wall and CPU seconds of this process (the
machine may be shared: CPU time is the steadier figure; the assembler and linker run in child
processes, counted in ``children CPU``). The split comes from ``compile_stats``: Python code
generation, LLVM (optimization and object emission), link. Keras applications are built at the
input size they were designed for (224x224, InceptionV3 299x299), as users compile them; ``--small``
builds them at the smallest size Keras accepts instead (32x32, 75x75), as this benchmark did before
(kernels are specialized to their shapes, so the code differs: EfficientNetB0 compiles about 20 %
faster there).

    python -m benchmarks.compile_time [--models inception,mlp] [--apps InceptionV3,ResNet50] [--repeat 1] [--small]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SEED_EXCLUDE = ("stereo_xception",)
DEFAULT_APPS = ("InceptionV3", "ResNet50")


def _build_timed(model, cache: Path) -> dict:
    import graphc

    shutil.rmtree(cache / "native", ignore_errors=True)
    children0 = os.times()
    t0, c0 = time.perf_counter(), time.process_time()
    cm = graphc.build(model, "native")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    children1 = os.times()
    stats = cm.compile_stats
    child = sum(children1[2:4]) - sum(children0[2:4])  # children's user + system seconds
    return {"wall_s": wall, "cpu_s": cpu, "children_cpu_s": child, "codegen_s": stats.get("codegen_s", 0.0),
            "llvm_s": stats.get("llvm_s", 0.0), "link_s": stats.get("link_s", 0.0),
            "ir_chars": stats.get("ir_chars", 0)}


def _best(model, repeat: int, cache: Path) -> dict:
    runs = [_build_timed(model, cache) for _ in range(max(1, repeat))]
    return min(runs, key=lambda r: r["cpu_s"] + r["children_cpu_s"])


def _app(name: str, directory: Path, small: bool):
    import keras
    import numpy as np

    import graphc
    from graphc.bench.keras_applications import APPLICATIONS, save_application

    shape = APPLICATIONS[name][0 if small else 1]
    path, _ = save_application(keras, name, directory, np.random.default_rng(0), shape)
    return graphc.saving.load_model(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="bundled examples, comma-separated (default: all but stereo_xception)")
    parser.add_argument("--apps", default=",".join(DEFAULT_APPS), help="keras.applications models ('' for none)")
    parser.add_argument("--repeat", type=int, default=1, help="builds per model, the fastest reported")
    parser.add_argument("--small", action="store_true", help="applications at their smallest input size")
    args = parser.parse_args(argv)
    from graphc import examples

    names = args.models.split(",") if args.models else [n for n in examples.names() if n not in SEED_EXCLUDE]
    apps = [a for a in args.apps.split(",") if a]
    header = ("| model | wall s | CPU s | children CPU s | codegen s | LLVM s | link s | IR chars |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        os.environ["GRAPHC_CACHE_DIR"] = str(cache)
        from graphc.backends.llvm import toolchain

        t0 = time.perf_counter()
        toolchain.runtime_objects()
        print(f"(the C runtime, compiled once into the cache: {time.perf_counter() - t0:.2f} s)")
        size = "the smallest input size Keras accepts" if args.small else "their design input size"
        print(f"(Keras applications at {size})\n")
        print(header)
        models = [(a, lambda a=a: _app(a, Path(tmp), args.small)) for a in apps] + \
                 [(n, lambda n=n: examples.build(n)) for n in names]
        for name, make in models:
            r = _best(make(), args.repeat, cache)
            print(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['children_cpu_s']:.2f} | {r['codegen_s']:.2f} "
                  f"| {r['llvm_s']:.2f} | {r['link_s']:.2f} | {int(r['ir_chars']):,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
