"""Benchmark runner: graphc native vs onnxruntime vs PyTorch eager, tables written to benchmarks/results/.

::

    python -m benchmarks.run                                  # every bundled example but stereo_xception
    python -m benchmarks.run --models mlp,inception --batch 1,32 --threads 1,2 --vs onnxruntime,torch
    python -m benchmarks.run --models inception --profile --profile-batch 32   # per-layer times too
    python -m benchmarks.run --profile residual,inception --train mlp,conv1d_text   # all models, plus these
    python -m benchmarks.run --models mlp,conv1d_text --train --no-inference  # training steps only
    python -m benchmarks.run --apps --vs onnxruntime,torch,openvino   # also keras.applications and a transformer
    python -m benchmarks.run --models none --apps --apps-batch 32 --vs onnxruntime   # the applications at batch 32

Everything runs in this one process (same threads, same batch, same inputs for every engine);
see :mod:`graphc.bench` for how the timing copes with a noisy machine. The markdown report is
printed and written to ``benchmarks/results/<date>.md`` (``<date>-2.md``... if taken) with the
raw samples beside it as ``.json`` and, where matplotlib is installed, a chart of the ratios as ``.png``.

``--apps`` adds Keras models as users bring them: ``keras.applications`` (ResNet50, MobileNetV2,
EfficientNetB0, InceptionV3 by default, at their design input sizes, random weights) and a BERT-style
transformer encoder, each saved by Keras as ``.keras`` and loaded by graphc (needs Keras).
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
DEFAULT_APPS = ("ResNet50", "MobileNetV2", "EfficientNetB0", "InceptionV3", "TransformerEncoder")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None,
                   help="comma-separated bundled example names, or none (default: all but "
                        + ", ".join(DEFAULT_EXCLUDE) + ")")
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
    p.add_argument("--apps", nargs="?", const=",".join(DEFAULT_APPS), default=None, metavar="NAMES",
                   help="also these Keras models, saved by Keras and loaded by graphc: keras.applications names "
                        "and TransformerEncoder (default: " + ", ".join(DEFAULT_APPS) + ")")
    p.add_argument("--apps-batch", default="1", help="batch sizes of the --apps models (default 1)")
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


def _keras_model(name: str):
    """``name`` built by Keras (random weights, design input size), saved as ``.keras``, loaded by graphc."""
    import tempfile

    import keras
    import numpy as np

    import graphc
    from graphc.bench.keras_applications import APPLICATIONS, keras_application, transformer_encoder

    rng = np.random.default_rng(0)
    if name == "TransformerEncoder":
        model = transformer_encoder(keras, rng)
    elif name in APPLICATIONS:
        model = keras_application(keras, name, rng, APPLICATIONS[name][1])
    else:
        raise SystemExit(f"unknown --apps model {name!r}; known: {', '.join((*APPLICATIONS, 'TransformerEncoder'))}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.keras"
        model.save(path)
        return graphc.saving.load_model(path)


def write_chart(report, path: Path) -> bool:
    """A bar chart of the other engines' time over graphc's per case (log scale, 1 = parity); False
    where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = {"onnxruntime": "ort/graphc", "OpenVINO f32": "ov/graphc", "OpenVINO default": "ov-default/graphc",
              "PyTorch": "torch/graphc"}
    cases = report.cases
    labels = [f"{c.model}\nb{c.batch} t{c.threads}" for c in cases]
    shown = {k: [c.ratios.get(r) for c in cases] for k, r in series.items()
             if any(c.ratios.get(r) is not None for c in cases)}
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(cases) * max(1, len(shown))), 5))
    width = 0.8 / max(1, len(shown))
    for i, (name, values) in enumerate(shown.items()):
        xs = [k + (i - (len(shown) - 1) / 2) * width for k in range(len(cases))]
        ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("other engine's time / graphc's (above 1: graphc faster)")
    ax.set_xticks(range(len(cases)), labels, rotation=90, fontsize=7)
    ax.set_title(f"graphc native vs other engines, {report.machine.get('date', '')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


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

    if args.models == "none":  # the --apps alone
        args.models = None
        names = []
    else:
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
        for app in _csv(args.apps or ""):
            model = _keras_model(app)
            say(f"{app}: loaded from the .keras file Keras wrote")
            report.extend(run_benchmark(model, args.apps_batch, args.threads, args.vs, unfused=not args.no_unfused,
                                        repeat=args.repeat, progress=say))
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
        if report.cases and write_chart(report, path.with_suffix(".png")):
            say(f"wrote {path.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
