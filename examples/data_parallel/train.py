"""Data-parallel training of a compiled model on several processes of one or more machines.

    torchrun --standalone --nproc-per-node 2 examples/data_parallel/train.py --epochs 3 --checkpoint dp.weights.h5
    mpirun -n 2 python examples/data_parallel/train.py --backend mpi --epochs 3 --checkpoint dp.weights.h5

Each process (rank) compiles the same native training step, trains on its share of every global batch
(``--batch-size`` samples per rank) and averages the gradients with the others before every update, so
all ranks keep identical weights: through torch.distributed's gloo backend (TCP; ``--backend gloo``, the
default, launched by torchrun) or MPI (mpi4py; ``--backend mpi``, launched by mpirun). Only rank 0 prints
progress and writes the checkpoint. On several machines, run the same torchrun command on each with
``--nnodes N --node-rank K --master-addr HOST --master-port PORT``, or give mpirun a host file
(``--hostfile hosts``). Open MPI refuses to run as root unless ``--allow-run-as-root`` is given.

``--resume`` restarts from the checkpoint (``fit(initial_epoch=...)``): every rank loads the file rank 0
wrote, which DataParallel then broadcasts from rank 0 anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import graphc
from graphc import Input, Model, callbacks, layers, optimizers
from graphc.distribute import DataParallel


def build_model(target: str) -> Model:
    graphc.utils.set_random_seed(0)  # the same start on every rank (rank 0's weights are broadcast anyway)
    x = Input(shape=(16, 16, 1))
    h = layers.Conv2D(8, 3, activation="relu")(x)
    h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(32, activation="relu")(h)
    model = Model(x, layers.Dense(4, activation="softmax")(h))
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if target == "native":
        graphc.build(model, target="native", training=True, threads=int(os.environ.get("GRAPHC_THREADS", "1")))
    return model


def make_data(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of 16x16 images: which quadrant is brightest (the same data on every rank)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.3, (samples, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 4, samples).astype(np.int32)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * 8:(r + 1) * 8, q * 8:(q + 1) * 8, 0] += 1.0
    return x, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="samples per rank and step")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--target", choices=["native", "reference"], default="native")
    parser.add_argument("--checkpoint", help="a .weights.h5 file rank 0 writes after every epoch")
    parser.add_argument("--resume", type=int, default=0, metavar="EPOCH",
                        help="start at this epoch from --checkpoint (after a restart)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a collective waits for its peers")
    parser.add_argument("--backend", choices=["gloo", "mpi"], default="gloo",
                        help="the collective engine: gloo (launch with torchrun) or mpi (launch with mpirun)")
    args = parser.parse_args(argv)

    distribution = DataParallel(backend=args.backend, timeout=args.timeout)
    model = build_model(args.target)
    if args.resume:
        model.load_weights(args.checkpoint)
    x, y = make_data(args.samples)
    cbs = [callbacks.ModelCheckpoint(args.checkpoint, save_weights_only=True, monitor="loss")] if args.checkpoint \
        else []
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, initial_epoch=args.resume,
                        callbacks=cbs, distribution=distribution, verbose=2)
    seconds = time.perf_counter() - start
    if distribution.rank == 0:
        epochs = args.epochs - args.resume
        print(f"{distribution.world_size} rank(s) on {args.backend}: {epochs * len(x) / seconds:.0f} samples/s, "
              f"final loss {history.history['loss'][-1]:.4f}, accuracy {history.history['accuracy'][-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
