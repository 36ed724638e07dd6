"""bf16 against float32: GEMM throughput, and the seed models' latency and accuracy beside onnxruntime and OpenVINO.

::

    python -m benchmarks.bf16                                   # GEMM 256..2048, the models at batch 1 and 32
    python -m benchmarks.bf16 --sizes 512,1024 --models inception --batch 1
    python -m benchmarks.bf16 --sizes '' --models '' --apps ResNet50,InceptionV3 --batch 1 --threads 2

- GEMM: ``M = N = K`` as a Dense layer's product (the weight packed once per instance), graphc
  native at ``precision="float32"`` and ``"bf16"`` with each bf16 kernel this CPU has (AMX tiles,
  AVX512-BF16's ``vdpbf16ps``: ``GRAPHC_BF16_KERNEL``), in GFLOP/s from the median wall time on
  one thread, beside the float32 FMA peak ``graphc bench --peak`` measures.
- Models: each bundled example built both ways, graphc's ONNX export in onnxruntime, and in
  OpenVINO (when installed) at float32 (``INFERENCE_PRECISION_HINT=f32``) and at its default
  precision (bf16 on CPUs with AMX or AVX512-BF16), shapes made static per batch; one thread,
  timed interleaved in one process (:func:`graphc.bench.measure`, medians). Accuracy is each
  reduced-precision engine against graphc float32 on the same inputs: the largest absolute
  difference, and that divided by the largest float32 output.

The markdown report is printed and written to ``benchmarks/results/<date>-bf16.md`` with the rows
as ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import graphc
from graphc.backends.llvm import compile_library
from graphc.backends.llvm.target import host_target
from graphc.bench import _input_arrays, _ort_session, _Runner, _subject, machine_info, measure, openvino
from graphc.bench.peak import measure_peak
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = "mlp,multi_output,inception,residual,separable_conv_bn,conv1d_text"


def _dense_graph(n: int, weight: np.ndarray, name: str) -> Graph:
    g = Graph(name)
    x = g.add_input("a", TensorType("float32", (n, n)))
    g.set_outputs([OpBuilder(g).emit("matmul", x, g.add_constant("w", weight))])
    return g


def gemm_rows(sizes: list[int], repeat: int, say) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        w = rng.standard_normal((n, n)).astype(np.float32)
        want = a.astype(np.float64) @ w.astype(np.float64)
        runners, errors = [], {}
        for label, precision, kernel in GEMM_VARIANTS:
            if kernel == "amx" and not host_target().has_amx_bf16:
                continue
            with _bf16_kernel(kernel):
                files = compile_library(_dense_graph(n, w, f"gemm_{n}"), precision=precision)
            inst = Library(files.shared, files.symbol).instance(1)
            got = inst.run([a])[0]
            errors[label] = float(np.abs(got - want).max() / np.abs(want).max())
            runners.append(_Runner(label, lambda i=inst, a=a: i.run([a])))
        timed = measure(runners, repeat, min_sample_s=0.05)
        flop = 2.0 * n ** 3
        row = {"n": n, "gflops": {r.name: flop / (timed[r.name].median_ms * 1e-3) / 1e9 for r in runners},
               "rel_error": errors}
        rows.append(row)
        say(f"gemm {n}: " + ", ".join(f"{k} {v:.0f}" for k, v in row["gflops"].items()) + " GFLOP/s")
    return rows


GEMM_VARIANTS = (("float32", "float32", None), ("bf16 AVX512-BF16", "bf16", "avx512"), ("bf16 AMX", "bf16", "amx"))


@contextmanager
def _bf16_kernel(kernel: str | None):
    """``GRAPHC_BF16_KERNEL`` set for the builds inside ("avx512"; otherwise the CPU's default, AMX where present)."""
    saved = os.environ.pop("GRAPHC_BF16_KERNEL", None)
    if kernel == "avx512":
        os.environ["GRAPHC_BF16_KERNEL"] = kernel
    try:
        yield
    finally:
        os.environ.pop("GRAPHC_BF16_KERNEL", None)
        if saved is not None:
            os.environ["GRAPHC_BF16_KERNEL"] = saved


def _error(got: list[np.ndarray], want: list[np.ndarray]) -> tuple[float, float]:
    worst_abs, worst_rel = 0.0, 0.0
    for g, w in zip(got, want):
        g64, w64 = np.asarray(g, np.float64).reshape(w.shape), np.asarray(w, np.float64)
        diff = float(np.abs(g64 - w64).max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.abs(w64).max()), 1e-30))
    return worst_abs, worst_rel


def model_rows(names: list[str], batches: list[int], repeat: int, say, *, apps: list[str] = (),
               threads: int = 1) -> list[dict]:
    """Each bundled example of ``names`` and Keras application of ``apps`` (random weights, through
    ``.keras``; random normal inputs), built both ways and timed beside onnxruntime and OpenVINO on
    ``threads`` threads."""
    from benchmarks.run import _keras_model

    subjects = [(name, lambda name=name: _subject(name, 0)) for name in names]
    subjects += [(name, lambda name=name: _subject(_keras_model(name), 0)) for name in apps]
    rows = []
    for name, make_subject in subjects:
        subject = make_subject()
        model = subject.make_model()
        graph = graphc.lower(model)
        f32 = graphc.build(model, "native", threads=threads)
        bf16 = graphc.build(model, "native", threads=threads, precision="bf16")
        proto = graphc.onnx.export(model, optimize=2)
        for batch in batches:
            arrays = _input_arrays(subject, graph, batch, 0)
            engines = {"graphc f32": lambda i=f32.instance, x=arrays: i.run(x),
                       "graphc bf16": lambda i=bf16.instance, x=arrays: i.run(x)}
            session = _ort_session(proto, threads)
            feeds = dict(zip(graph.inputs, arrays))
            engines["onnxruntime"] = lambda s=session, f=feeds: s.run(None, f)
            if openvino.available():
                engines["openvino f32"] = openvino.openvino_runner(proto, graph.inputs, arrays, threads, "f32")
                engines["openvino default"] = openvino.openvino_runner(proto, graph.inputs, arrays, threads, None)
            want = [np.array(o) for o in engines["graphc f32"]()]  # copies: outputs may be reused buffers
            accuracy = {e: _error([np.array(o) for o in engines[e]()], want)
                        for e in engines if e != "graphc f32"}
            timed = measure([_Runner(e, fn) for e, fn in engines.items()], repeat, min_sample_s=0.02,
                            settle_s=0.1 if threads > 1 else 0.0)  # the other engines' workers asleep first
            row = {"model": name, "batch": batch, "threads": threads, "precision_built": bf16.precision,
                   "ms": {e: r.median_ms if r.error is None else None for e, r in timed.items()},
                   "errors": {e: r.error for e, r in timed.items() if r.error},
                   "max_abs": {e: a for e, (a, _) in accuracy.items()},
                   "rel": {e: r for e, (_, r) in accuracy.items()}}
            rows.append(row)
            say(f"{name} batch {batch}: " + ", ".join(f"{e} {v:.3f} ms" for e, v in row["ms"].items() if v))
    return rows


def _fmt_ms(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ratio(a, b) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def _kernel_name() -> str:
    target = host_target()
    if target.has_amx_bf16:
        return "AMX tiles (GRAPHC_BF16_KERNEL=avx512: AVX512-BF16)"
    return "AVX512-BF16" if target.has_avx512_bf16 else "none (bf16 builds are float32 code)"


def to_markdown(machine: dict, peak, gemm: list[dict], models: list[dict]) -> str:
    lines = ["# bf16 vs float32 (graphc native), onnxruntime and OpenVINO", "",
             f"{machine.get('date')}; {machine.get('cpu')} ({machine.get('cpu_features')}); "
             f"{machine.get('logical_cpus')} logical CPUs; load {machine.get('load_average')}. "
             f"graphc's bf16 kernel on this CPU: {_kernel_name()}.", ""]
    if gemm:
        variants = list(gemm[0]["gflops"])
        lines += ["## GEMM (Dense layer, M = N = K, 1 thread)", "",
                  f"float32 FMA peak measured here: {peak.gflops:.0f} GFLOP/s on one core ({peak.widest}-bit). "
                  "GFLOP/s (2 M N K per call, median wall time); in brackets the speedup over float32; the "
                  "relative error is the largest difference from a float64 product over its largest element.", "",
                  "| M=N=K | " + " | ".join(f"{v} GFLOP/s" for v in variants) + " | float32 % of FMA peak | "
                  + " | ".join(f"{v} rel. error" for v in variants[1:]) + " |",
                  "| ---: | " + " | ".join("---:" for _ in variants) + " | ---: | "
                  + " | ".join("---:" for _ in variants[1:]) + " |"]
        for r in gemm:
            g = r["gflops"]
            cells = [f"{g['float32']:.0f}"] + [f"{g[v]:.0f} ({g[v] / g['float32']:.1f}x)" for v in variants[1:]]
            lines.append(f"| {r['n']} | " + " | ".join(cells) + f" | {100 * g['float32'] / peak.gflops:.0f} % | "
                         + " | ".join(f"{r['rel_error'][v]:.1e}" for v in variants[1:]) + " |")
        lines.append("")
    if models:
        engines = list(models[0]["ms"])
        lines += [f"## Models: latency (ms, median, {models[0].get('threads', 1)} thread(s))", "",
                  "| model | batch | " + " | ".join(engines) + " | f32 / bf16 | OpenVINO default / graphc bf16 |",
                  "| --- | ---: | " + " | ".join("---:" for _ in engines) + " | ---: | ---: |"]
        for r in models:
            ms = r["ms"]
            lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(_fmt_ms(ms.get(e)) for e in engines)
                         + f" | {_ratio(ms.get('graphc f32'), ms.get('graphc bf16'))} | "
                         f"{_ratio(ms.get('openvino default'), ms.get('graphc bf16'))} |")
        lines += ["", "## Models: accuracy against graphc float32 (same inputs)", "",
                  "max abs difference / relative (that over the largest float32 output).", "",
                  "| model | batch | graphc bf16 | OpenVINO default | onnxruntime |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for r in models:
            cells = []
            for e in ("graphc bf16", "openvino default", "onnxruntime"):
                cells.append("—" if e not in r["max_abs"] else f"{r['max_abs'][e]:.2e} / {r['rel'][e]:.2e}")
            lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
        failed = [f"{r['model']} batch {r['batch']} {e}: {msg}" for r in models for e, msg in r["errors"].items()]
        if failed:
            lines += ["", "Failed: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bf16", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024,2048", help="GEMM M = N = K (empty: none)")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="bundled examples (empty: none)")
    ap.add_argument("--apps", default="", help="Keras applications too (benchmarks.run's names: ResNet50,...)")
    ap.add_argument("--threads", type=int, default=1, help="threads of every engine in the model rows")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>-bf16.md)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if not host_target().has_avx512_bf16:
        say("this CPU has no AVX512-BF16: graphc's bf16 builds are float32 code here")
    machine = machine_info()
    peak = measure_peak()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    gemm = gemm_rows(sizes, args.repeat, say)
    apps = [n.strip() for n in args.apps.split(",") if n.strip()]
    models = model_rows(names, [int(b) for b in args.batch.split(",")], args.repeat, say, apps=apps,
                        threads=args.threads)
    text = to_markdown(machine, peak, gemm, models)
    print(text)
    if not args.no_write:
        path = Path(args.out) if args.out else RESULTS / f"{_dt.date.today().isoformat()}-bf16.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps({"machine": machine, "peak_gflops": peak.gflops,
                                                         "gemm": gemm, "models": models}, indent=1, default=str))
        say(f"wrote {path} and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
