"""keras.applications through graphc: accuracy against Keras, compile time, native vs onnxruntime.

::

    python -m benchmarks.applications                         # every application, at its design input size
    python -m benchmarks.applications --models ResNet50,MobileNetV2 --repeat 9 --small
    python -m benchmarks.applications --models MobileNetV3Large --free-sizes   # built over (None, None, 3)

For each model Keras builds (``weights=None``, random BatchNorm statistics) and saves a ``.keras``
file; graphc loads it; the table gives the layer count, the largest error of graphc's reference,
ONNX and native outputs against ``keras_model.predict`` (relative to the output's scale), the
time of ``graphc compile FILE --target native`` in a fresh process with an empty build cache,
and native vs onnxruntime (graphc's own ONNX export) at batch 1, one thread, measured interleaved
in this one process (medians). ``--free-sizes`` builds each model over images of any size
(``input_shape=(None, None, 3)``, as ``MobileNetV3Large()`` is by default; measured at the design
size), where Keras allows it. The report is printed and written to
``benchmarks/results/<date>-applications.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _compile_seconds(path: Path, out: Path) -> tuple[float, str]:
    """Wall time of ``graphc compile`` in a new process with an empty build cache."""
    env = {**os.environ, "GRAPHC_CACHE_DIR": str(out / "cache")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "graphc.cli", "compile", str(path), "--target", "native",
                           "-o", str(out / "lib")], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    return elapsed, "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def _max_error(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.applications", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated application names (default: all)")
    p.add_argument("--repeat", type=int, default=7, help="measured rounds per engine (default 7)")
    p.add_argument("--small", action="store_true", help="smallest accepted inputs instead of the design size")
    p.add_argument("--free-sizes", action="store_true",
                   help="build over images of any size (input_shape=(None, None, 3)), measured at the design size")
    p.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>-applications.md)")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    import graphc
    from graphc.bench import machine_info, run_benchmark
    from graphc.bench.keras_applications import APPLICATIONS, application_inputs, save_application
    from graphc.frontend import state

    names = [n.strip() for n in args.models.split(",")] if args.models else list(APPLICATIONS)
    rows = []
    for name in names:
        rng = np.random.default_rng(0)
        shape = APPLICATIONS[name][0 if args.small else 1]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            built = (None, None, shape[-1]) if args.free_sizes else shape
            row = {"model": name, "input": "x".join(map(str, shape)) + (" (built any size)" if args.free_sizes else "")}
            try:
                path, kmodel = save_application(keras, name, tmp, rng, built)
            except Exception as exc:  # noqa: BLE001 - Keras refusing free sizes for a model is a row too
                rows.append({**row, "layers": 0, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})
                continue
            row["layers"] = len(kmodel.layers)
            try:
                row["compile_s"], failure = _compile_seconds(path, tmp)
                state.clear_session()
                model = graphc.models.load_model(path)
                x = application_inputs(name, rng, 1, shape)
                want = kmodel.predict(x, verbose=0)
                for target in ("reference", "onnx", "native"):
                    row[target] = _max_error(graphc.build(model, target=target).predict(x), want)
                report = run_benchmark(model, 1, 1, vs="onnxruntime", unfused=False, repeat=args.repeat,
                                       inputs=x, check=False)
                case = report.cases[0]
                row["native_ms"], row["ort_ms"] = case.median("graphc"), case.median("onnxruntime")
                row["error"] = failure
            except Exception as exc:  # noqa: BLE001 - a model that fails is a row of the report
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] {row}", file=sys.stderr, flush=True)
    info = machine_info()
    lines = [f"# keras.applications through graphc ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Machine: {info.get('cpu', '?')}, {info.get('logical_cpus', '?')} logical CPUs; batch 1, 1 thread; "
             f"medians of {args.repeat} interleaved rounds. Errors: max |graphc - Keras| / max(1, max |Keras|).",
             "", "| model | input | layers | reference err | ONNX err | native err | compile s | native ms | "
             "onnxruntime ms | ort/native | note |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    for r in rows:
        ratio = r["ort_ms"] / r["native_ms"] if r.get("ort_ms") and r.get("native_ms") else None
        lines.append(f"| {r['model']} | {r['input']} | {r['layers']} | {f(r.get('reference'), '.1e')} | "
                     f"{f(r.get('onnx'), '.1e')} | {f(r.get('native'), '.1e')} | {f(r.get('compile_s'), '.1f')} | "
                     f"{f(r.get('native_ms'), '.2f')} | {f(r.get('ort_ms'), '.2f')} | {f(ratio, '.2f')} | "
                     f"{r.get('error', '')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else RESULTS / f"{_dt.date.today().isoformat()}-applications.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
