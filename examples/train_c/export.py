"""Export a bundled model's training step as a native library, plus a data file for the C example.

    python export.py [--model mlp] [--samples 96] [--seed 0] [--out build]

Compiles the model with SGD (learning rate 0.1) and categorical cross-entropy, writes
OUT/libMODEL.a, OUT/libMODEL.so, OUT/MODEL.h (the training step: gc_instance_train_step) and
OUT/data.txt: random inputs x and one-hot targets y of a linear rule of x, which the model can
learn, in the format main.c reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_tensors(path: Path, named: list[tuple[str, np.ndarray]]) -> None:
    with path.open("w") as f:
        for name, a in named:
            f.write(f"{name} {a.ndim} {' '.join(str(d) for d in a.shape)}\n")
            f.write(" ".join(repr(float(v)) for v in a.ravel()) + "\n")


def model_and_data(name: str, samples: int, seed: int):
    """The compiled model (its weights from ``seed``) and the data set (x, y)."""
    from graphc import examples

    model = examples.build(name, seed=seed)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model._graphc_trainer.optimizer.learning_rate = 0.1
    rng = np.random.default_rng(seed)
    features = int(model.inputs[0].shape[-1])
    classes = int(model.outputs[0].shape[-1])
    x = rng.standard_normal((samples, features)).astype(np.float32)
    rule = rng.standard_normal((features, classes)).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[np.argmax(x @ rule, axis=1)]
    return model, x, y


def main(argv=None) -> int:
    from graphc.backends.llvm import export_files
    from graphc.training.native_step import train_step_library

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="build")
    args = p.parse_args(argv)
    out = Path(args.out)
    model, x, y = model_and_data(args.model, args.samples, args.seed)
    export_files(train_step_library(model, name=args.model), out)
    write_tensors(out / "data.txt", [("x", x), ("y", y)])
    print(f"wrote {out}/lib{args.model}.a, {out}/lib{args.model}.so, {out}/{args.model}.h, {out}/data.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
