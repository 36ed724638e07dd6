"""int8 against float32: graphc's native int8 kernels beside onnxruntime's own int8 model (onnxruntime, OpenVINO).

::

    python -m benchmarks.int8                                # the seed models at batch 1 and 32
    python -m benchmarks.int8 --models mlp,residual --batch 32

For each bundled example, in one process, one thread, timed interleaved (:func:`graphc.bench.measure`,
medians):

- ``graphc f32``: the float model, native;
- ``graphc int8``: ``graphc.quantize`` (per-channel int8 weights, uint8 activations, minmax over
  ``--calibration`` samples) built native: the quantized products run on int8 kernels
  (:mod:`graphc.passes.fold_qdq`, ``vpdpbusd`` on this CPU when it has AVX512-VNNI), the rest in float;
- ``onnxruntime f32``: graphc's ONNX export of the float model;
- ``onnxruntime int8``: that export quantized by ``onnxruntime.quantization.quantize_static`` (QDQ,
  per-channel int8 weights, uint8 activations, minmax, the same calibration samples);
- ``openvino int8`` (when installed): the same QDQ model in OpenVINO, shapes made static per batch.

Accuracy is each int8 engine against graphc float32 on the same inputs: the largest difference over
the largest float32 output, and where the model ends in a classifier (a 2-D output), the top-1
agreement. The markdown report is printed and written to ``benchmarks/results/<date>-int8.md`` with
the rows as ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

import graphc
from graphc import examples
from graphc.backends.llvm.kernels.gemm_int8 import dot_path
from graphc.backends.llvm.target import host_target
from graphc.bench import _input_arrays, _ort_session, _Runner, _subject, machine_info, measure
from graphc.quantization import fold_integer_products

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("graphc f32", "graphc int8", "onnxruntime f32", "onnxruntime int8", "openvino int8")
DEFAULT_MODELS = "mlp,qa_two_inputs,inception,residual,separable_conv_bn,conv1d_text,multi_output"


def _openvino():
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def ort_quantized(float_path: Path, out_path: Path, graph, calibration: list[np.ndarray]) -> None:
    """onnxruntime's static QDQ quantization of the float export, calibrated on ``calibration`` (graph order)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process: the export is already optimized

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = len(calibration[0])
            self.feeds = iter([{name: a[i:i + 1] for name, a in zip(graph.inputs, calibration)} for i in range(n)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _ov_compiled(ov, onnx_path: Path, graph, arrays):
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    model.reshape({inp.get_any_name(): list(a.shape) for inp, a in zip(model.inputs, arrays)})
    config = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    names = [inp.get_any_name() for inp in model.inputs]

    def run():
        request.infer({n: a for n, a in zip(graph.inputs, arrays) if n in names})
        return [np.array(request.get_output_tensor(k).data) for k in range(len(compiled.outputs))]

    return run


def _accuracy(got: list[np.ndarray], want: list[np.ndarray]) -> dict:
    rel, agree = 0.0, None
    for g, w in zip(got, want):
        g64, w64 = np.asarray(g, np.float64).reshape(w.shape), np.asarray(w, np.float64)
        rel = max(rel, float(np.abs(g64 - w64).max()) / max(float(np.abs(w64).max()), 1e-30))
        if w64.ndim == 2 and w64.shape[1] > 1:
            top = float((g64.argmax(1) == w64.argmax(1)).mean())
            agree = top if agree is None else min(agree, top)
    return {"rel": rel, "top1_agreement": agree}


def model_rows(names: list[str], batches: list[int], calibration: int, repeat: int, say) -> list[dict]:
    ov = _openvino()
    rows = []
    for name in names:
        subject = _subject(name, 0)
        model = subject.make_model()
        graph = graphc.lower(model)
        calib = _input_arrays(subject, graph, calibration, 1)
        quantized = graphc.quantize(model, dict(zip(graph.inputs, calib)) if len(calib) > 1 else calib[0])
        folded = fold_integer_products(graphc.optimize(quantized, 2)).op_counts()
        f32 = graphc.build(model, "native", threads=1)
        int8 = graphc.build(quantized, "native", threads=1)
        with tempfile.TemporaryDirectory() as tmp:
            float_path, q_path = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.int8.onnx"
            proto = graphc.onnx.export(model, float_path, optimize=2)
            ort_quantized(float_path, q_path, graph, calib)
            for batch in batches:
                arrays = _input_arrays(subject, graph, batch, 0)
                feeds = dict(zip(graph.inputs, arrays))
                ort_f32, ort_int8 = _ort_session(proto, 1), _ort_session(onnx.load(str(q_path)), 1)
                engines = {"graphc f32": lambda i=f32.instance, x=arrays: i.run(x),
                           "graphc int8": lambda i=int8.instance, x=arrays: i.run(x),
                           "onnxruntime f32": lambda s=ort_f32, f=feeds: s.run(None, f),
                           "onnxruntime int8": lambda s=ort_int8, f=feeds: s.run(None, f)}
                failed = {}
                if ov is not None:
                    try:
                        engines["openvino int8"] = _ov_compiled(ov, q_path, graph, arrays)
                    except RuntimeError as exc:  # its compiler refuses some QDQ models: reported, not timed
                        failed["openvino int8"] = str(exc).strip().splitlines()[-1]
                want = [np.array(o) for o in engines["graphc f32"]()]
                accuracy = {}
                for e in [e for e in engines if "int8" in e]:
                    try:
                        accuracy[e] = _accuracy([np.array(o) for o in engines[e]()], want)
                    except Exception as exc:  # noqa: BLE001  (onnxruntime's quantizer writes some invalid models)
                        failed[e] = str(exc).strip().splitlines()[-1][:300]
                        del engines[e]
                timed = measure([_Runner(e, fn) for e, fn in engines.items()], repeat, min_sample_s=0.02)
                row = {"model": name, "batch": batch,
                       "integer_ops": {k: v for k, v in folded.items() if k.startswith("qlinear")},
                       "float_products": {k: v for k, v in folded.items()
                                          if k in ("fused_matmul", "fused_conv", "fused_separable_conv", "matmul",
                                                   "conv")},
                       "ms": {**{e: r.median_ms if r.error is None else None for e, r in timed.items()},
                              **dict.fromkeys(failed)},
                       "errors": {**{e: r.error for e, r in timed.items() if r.error}, **failed},
                       "accuracy": accuracy}
                rows.append(row)
                say(f"{name} batch {batch}: " + ", ".join(f"{e} {v:.3f} ms" for e, v in row["ms"].items() if v))
    return rows


def _fmt_ms(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ratio(a, b) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def _ops(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def to_markdown(machine: dict, models: list[dict], calibration: int) -> str:
    path = dot_path(host_target()).name
    lines = ["# int8 (graphc native) vs float32, onnxruntime and OpenVINO int8", "",
             f"{machine.get('date')}; {machine.get('cpu')}; {machine.get('logical_cpus')} logical CPUs; load "
             f"{machine.get('load_average')}; one thread. graphc's int8 dot product on this CPU: {path}. "
             f"Quantized with {calibration} calibration samples (graphc.quantize and onnxruntime's quantize_static "
             "alike: per-channel int8 weights, uint8 activations, minmax).", ""]
    if not models:
        return "\n".join(lines) + "\n"
    engines = [e for e in ENGINES if any(e in r["ms"] for r in models)]
    lines += ["## Latency (ms, median, 1 thread)", "",
              "| model | batch | " + " | ".join(engines) + " | graphc f32 / int8 | onnxruntime int8 / graphc int8 |"
              + (" openvino int8 / graphc int8 |" if "openvino int8" in engines else ""),
              "| --- | ---: | " + " | ".join("---:" for _ in engines) + " | ---: | ---: |"
              + (" ---: |" if "openvino int8" in engines else "")]
    for r in models:
        ms = r["ms"]
        line = (f"| {r['model']} | {r['batch']} | " + " | ".join(_fmt_ms(ms.get(e)) for e in engines)
                + f" | {_ratio(ms.get('graphc f32'), ms.get('graphc int8'))} | "
                f"{_ratio(ms.get('onnxruntime int8'), ms.get('graphc int8'))} |")
        if "openvino int8" in engines:
            line += f" {_ratio(ms.get('openvino int8'), ms.get('graphc int8'))} |"
        lines.append(line)
    int8_engines = [e for e in engines if "int8" in e]
    lines += ["", "## Accuracy against graphc float32 (same inputs)", "",
              "largest difference / largest float32 output; top-1 agreement where the output is a class score. The "
              "seed models carry random weights, so their class scores are nearly uniform and top-1 agreement is "
              "fragile: an engine whose scores tie after quantization loses it wholesale.", "",
              "| model | batch | " + " | ".join(int8_engines) + " |", "| --- | ---: | "
              + " | ".join("---:" for _ in int8_engines) + " |"]
    for r in models:
        cells = []
        for e in int8_engines:
            a = r["accuracy"].get(e)
            if a is None:
                cells.append("—")
                continue
            top = "" if a["top1_agreement"] is None else f", top-1 {100 * a['top1_agreement']:.0f} %"
            cells.append(f"{a['rel']:.2e}{top}")
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "## What runs in integers (graphc)", "", "| model | int8 ops | float products |",
              "| --- | --- | --- |"]
    for r in models:
        if r["batch"] == models[0]["batch"]:
            lines.append(f"| {r['model']} | {_ops(r['integer_ops'])} | {_ops(r['float_products'])} |")
    failed = [f"{r['model']} batch {r['batch']} {e}: {msg}" for r in models for e, msg in r["errors"].items()]
    if failed:
        lines += ["", "Failed: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="bundled examples, comma-separated")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--calibration", type=int, default=100, help="calibration samples")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>-int8.md)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        examples.get(n)
    machine = machine_info()
    ov = _openvino()
    machine.setdefault("versions", {})["openvino"] = ov.__version__ if ov is not None else "not installed"
    models = model_rows(names, [int(b) for b in args.batch.split(",")], args.calibration, args.repeat, say)
    text = to_markdown(machine, models, args.calibration)
    print(text)
    if not args.no_write:
        path = Path(args.out) if args.out else RESULTS / f"{_dt.date.today().isoformat()}-int8.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps({"machine": machine, "models": models}, indent=1,
                                                        default=str))
        say(f"wrote {path} and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
