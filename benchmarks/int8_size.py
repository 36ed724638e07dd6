"""int8 library size: the weight bytes of every seed model's native library, float32 against ``graphc.quantize``.

::

    python -m benchmarks.int8_size                      # every quantizable seed model
    python -m benchmarks.int8_size --models residual --no-write

Size does not depend on what the weights learned, so the bundled (untrained) seed models are quantized with
100 random calibration samples (per-channel int8 weights, uint8 activations, minmax) and built native. For
each library: the weights blob it embeds (64-byte aligned constants, :func:`benchmarks.int8_accuracy.weight_bytes`),
the weight tensors in it (constants of two or more dimensions: kernels and embedding tables) and the rest
(per-channel scales, int32 biases, zero points, alignment), whose share is what keeps a small model's total
below the kernels' 4x. The goal (issue 14): libraries 4x smaller in weight bytes. The report goes to
``benchmarks/results/<date>-int8-size.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import numpy as np

import graphc
from benchmarks.int8_accuracy import CALIBRATION, _kib, weight_bytes
from graphc import examples
from graphc.bench import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mlp", "residual", "inception", "separable_conv_bn", "multi_output", "conv1d_text")


def measure(name: str, seed: int = 0) -> dict:
    """Float32 and int8 weight bytes of seed model ``name``'s native libraries."""
    model = examples.build(name, seed=seed)
    calibration = examples.inputs(name, np.random.default_rng(seed), CALIBRATION)
    f = weight_bytes(graphc.build(model, "native"))
    q = weight_bytes(graphc.build(graphc.quantize(model, calibration), "native"))
    return {"model": name, "float32": f, "int8": q}


def to_markdown(machine: dict, rows: list[dict]) -> str:
    lines = ["# int8 library size: weight bytes of the native libraries, float32 vs int8", "",
             f"{machine.get('date')}; graphc {machine.get('versions', {}).get('graphc')}. "
             "`python -m benchmarks.int8_size`: each seed model quantized with "
             f"{CALIBRATION} random calibration samples (per-channel int8 weights, uint8 activations, minmax), "
             "both libraries built native. The weights blob each library embeds; weight tensors: constants "
             "of two or more dimensions; rest: per-channel scales, int32 biases, zero points, 64-byte alignment; "
             "float32 left: weight tensors the int8 library keeps in float32, by layer.", "",
             "| model | float32 library | int8 library | ratio | float32 weight tensors "
             "| int8 library's weight tensors | tensor ratio | rest | float32 left |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        f, q = r["float32"], r["int8"]
        fk, qk = sum(f["weight_tensors"].values()), sum(q["weight_tensors"].values())
        left = ", ".join(f"{k} {_kib(v)}" for k, v in q["float_weights"].items()) or "none"
        lines.append(f"| {r['model']} | {_kib(f['total'])} | {_kib(q['total'])} | {f['total'] / q['total']:.2f}x "
                     f"| {_kib(fk)} | {_kib(qk)} | {fk / max(qk, 1):.2f}x | {_kib(q['total'] - qk)} | {left} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.int8_size", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="seed models, comma-separated")
    ap.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>-int8-size.md)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in examples.names()]
    if unknown:
        ap.error(f"unknown seed model(s) {', '.join(unknown)}; choose from {', '.join(examples.names())}")
    text = to_markdown(machine_info(), [measure(n) for n in names])
    print(text)
    if not args.no_write:
        path = Path(args.out) if args.out else RESULTS / f"{_dt.date.today().isoformat()}-int8-size.md"
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
