"""Export a bundled seed model as a native library, plus an inputs file for the C example.

    python export.py [--model mlp] [--batch 3] [--seed 0] [--out build] [--triple aarch64-linux-gnu [--cpu CPU]]

Writes OUT/libMODEL.a, OUT/libMODEL.so, OUT/MODEL.h, OUT/inputs.txt (random inputs in the
format main.c reads) and OUT/expected.txt (graphc's own outputs for them, same format). With
--triple the library is built for that platform (cross-compiled); the expected outputs are still
computed on this machine, by its own native library.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_tensors(path: Path, named: list[tuple[str, np.ndarray]]) -> None:
    with path.open("w") as f:
        for name, a in named:
            f.write(f"{name} {a.ndim} {' '.join(str(d) for d in a.shape)}".rstrip() + "\n")
            f.write(" ".join(repr(float(v)) if a.dtype.kind == "f" else str(int(v)) for v in a.ravel()) + "\n")


def main(argv=None) -> int:
    import graphc
    from graphc import examples

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="build")
    p.add_argument("--triple", default=None, help="build the library for this platform (e.g. aarch64-linux-gnu)")
    p.add_argument("--cpu", default=None, help="with --triple: the CPU (e.g. cortex-a72; default generic)")
    args = p.parse_args(argv)
    out = Path(args.out)
    model = examples.build(args.model, seed=args.seed)
    compiled = graphc.build(model, target="native")
    compiled.export_library(out, name=args.model, triple=args.triple, cpu=args.cpu)
    feeds = compiled.feeds(examples.inputs(args.model, np.random.default_rng(args.seed), args.batch))
    arrays = [(name, np.asarray(feeds[name], dtype=dt)) for name, dt in compiled._in_dtypes]
    write_tensors(out / "inputs.txt", arrays)
    results = compiled.run(dict(arrays))
    write_tensors(out / "expected.txt", [(name, results[v]) for name, v in
                                         zip(compiled.output_names, compiled.graph.outputs)])
    print(f"wrote {out}/lib{args.model}.a, {out}/lib{args.model}.so, {out}/{args.model}.h, "
          f"{out}/inputs.txt, {out}/expected.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
