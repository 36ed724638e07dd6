"""Export a bundled seed model for batch inference: the library, its header, its weights file and inputs.

    python export.py [--model mlp] [--samples 256] [--seed 0] [--out build]

Writes OUT/libMODEL.so, OUT/libMODEL.a, OUT/MODEL.h, OUT/MODEL.weights (the weights outside the library,
so new weights ship without relinking) and OUT/inputs.npz (``--samples`` random samples per model input,
by input name). The same files come from ``graphc compile MODEL --target native --weights external -o OUT``;
only the inputs file is this example's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def export(model_name: str, out: Path, samples: int, seed: int) -> dict[str, Path]:
    """Build the seed model (weights drawn from ``seed``), write its library files and inputs; returns the
    files by kind (shared, static, header, weights, inputs)."""
    import graphc
    from graphc import examples

    model = examples.build(model_name, seed=seed)
    compiled = graphc.build(model, target="native")
    files = compiled.export_library(out, name=model_name, weights="external")
    feeds = compiled.feeds(examples.inputs(model_name, np.random.default_rng(seed), samples))
    files["inputs"] = out / "inputs.npz"
    np.savez(files["inputs"], **{name: np.asarray(feeds[name]) for name in compiled.graph.inputs})
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", help="a bundled example (graphc examples lists them)")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="build")
    args = p.parse_args(argv)
    for kind, path in sorted(export(args.model, Path(args.out), args.samples, args.seed).items()):
        print(f"wrote {path} ({kind})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
