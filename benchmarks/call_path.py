"""The call path: what a small model's call costs around its kernels, graphc against onnxruntime.

::

    python -m benchmarks.call_path    # the 64-32-10 MLP, the seed MLP and text model, batch 1, 1 thread
    python -m benchmarks.call_path --models mlp --batch 1,32 --repeat 15

For each model, in one process and interleaved (:func:`graphc.bench.measure`): the time inside the
generated code per run (the native profiler's clock around ``gc_instance_run``'s body), then the
calls a user makes - ``cm.predict(x)``, ``cm.run(feeds, out=...)``, ``Instance.run`` through the C call
path and through ctypes alone - and onnxruntime's ``InferenceSession.run`` on graphc's ONNX export of
the same model. The overhead column is each call's median minus the generated code's time.
Writes ``benchmarks/results/<date>-call_path.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _tiny_mlp():
    import graphc
    from graphc import layers

    inp = graphc.Input((64,), name="x")
    h = layers.Dense(32, activation="relu")(inp)
    return graphc.Model(inp, layers.Dense(10, activation="softmax")(h), name="mlp_64_32_10")


def measure_model(name: str, batch: int, repeat: int) -> dict:
    import graphc
    from graphc.bench import _input_arrays, _ort_session, _Runner, _subject, measure
    from graphc.bench.native_profile import profile_compiled

    subject = _subject(_tiny_mlp() if name == "mlp_64_32_10" else name, 0)
    model = subject.make_model()
    cm = graphc.build(model, "native", threads=1)
    inputs = _input_arrays(subject, cm.graph, batch, 0)
    x = inputs[0] if len(inputs) == 1 else inputs
    feeds = dict(zip(cm.graph.inputs, inputs))
    out = [np.empty_like(o) for o in cm.instance.run(inputs)]
    ctypes_only = cm.library.instance(1)
    ctypes_only._fast = None
    session = _ort_session(graphc.onnx.export(model, optimize=2), 1)
    ort_feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    runners = [
        _Runner("cm.predict", lambda: cm.predict(x)),
        _Runner("cm.run(out=)", lambda: cm.run(feeds, out=out)),
        _Runner("Instance.run", lambda: cm.instance.run(inputs)),
        _Runner("Instance.run, ctypes only", lambda: ctypes_only.run(inputs)),
        _Runner("onnxruntime", lambda: session.run(None, ort_feeds)),
    ]
    results = measure(runners, repeat, min_sample_s=0.02)
    code_ms = float(np.median([profile_compiled(cm, x, runs=2000, peak=False).run_ms for _ in range(3)]))
    return {"model": name, "batch": batch, "code_us": code_ms * 1e3,
            "calls": {k: (None if r.median_ms is None else r.median_ms * 1e3) for k, r in results.items()},
            "errors": {k: r.error for k, r in results.items() if r.error}}


def to_markdown(rows: list[dict], machine: dict) -> str:
    names = list(rows[0]["calls"]) if rows else []
    lines = [f"# The call path, {_dt.date.today().isoformat()}", "",
             f"Machine: {machine.get('cpu', '?')} ({machine.get('cpu_features', '')}), "
             f"{machine.get('logical_cpus', '?')} logical CPUs, load {machine.get('load_average', '?')}; "
             "onnxruntime " + machine.get("versions", {}).get("onnxruntime", "?") + "; 1 thread; medians of "
             "interleaved rounds, in µs. *code*: the generated code's own time per run (native profiler). "
             "Overhead = call − code.", "",
             "| model | batch | code | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for r in rows:
        cells = []
        for k in names:
            v = r["calls"][k]
            cells.append("error" if v is None else f"{v:.2f} (+{v - r['code_us']:.2f})")
        lines.append(f"| {r['model']} | {r['batch']} | {r['code_us']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from graphc.bench import machine_info

    p = argparse.ArgumentParser(prog="python -m benchmarks.call_path", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp_64_32_10,mlp,qa_two_inputs")
    p.add_argument("--batch", default="1")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    rows = [measure_model(m.strip(), int(b), args.repeat) for m in args.models.split(",") if m.strip()
            for b in args.batch.split(",")]
    machine = machine_info()
    text = to_markdown(rows, machine)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"{_dt.date.today().isoformat()}-call_path"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
