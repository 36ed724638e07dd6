"""The same batch inference without Ray: a multiprocessing pool whose workers each load the library once.

    python export.py --model mlp --out build
    python pool.py build mlp --out outputs_pool.npz --processes 2

Workers are started with ``spawn`` (fresh interpreters that inherit nothing from this process); the pool's
initializer creates one :class:`~predictor.LibraryPredictor` per worker from the folder and the library's
name, and every batch is then a call on that worker's instance. The outputs (in input order, with ``pid``
and ``instance`` as in ray_predict.py) are written to ``--out``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # predictor.py, for this process and the workers

from predictor import LibraryPredictor, load_inputs  # noqa: E402

_predictor: LibraryPredictor | None = None  # this worker's, created once by the pool's initializer


def _create(directory: str, name: str, threads: int) -> None:
    global _predictor
    _predictor = LibraryPredictor(directory, name, threads)


def _predict(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _predictor(batch)


def predict(directory: str, name: str, inputs: dict[str, np.ndarray], *, batch_size: int = 64, processes: int = 2,
            threads: int = 1) -> dict[str, np.ndarray]:
    """Run library ``name`` of ``directory`` over ``inputs`` on a pool of ``processes`` workers; returns every
    output by name, in input order."""
    n = len(next(iter(inputs.values())))
    batches = [{k: v[start:start + batch_size] for k, v in inputs.items()} for start in range(0, n, batch_size)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_create, initargs=(str(Path(directory).resolve()), name, threads)) as pool:
        results = pool.map(_predict, batches, chunksize=1)  # in batch order
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory", help="the folder export.py (or graphc compile --weights external) wrote")
    p.add_argument("name", help="the library's name (libNAME.so)")
    p.add_argument("--inputs", default=None, help="an .npz of inputs by name (default DIRECTORY/inputs.npz)")
    p.add_argument("--out", default="outputs_pool.npz")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--processes", type=int, default=2, help="worker processes, each with its own library instance")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per worker")
    args = p.parse_args(argv)
    inputs = load_inputs(args.inputs or Path(args.directory) / "inputs.npz")
    outputs = predict(args.directory, args.name, inputs, batch_size=args.batch_size, processes=args.processes,
                      threads=args.threads)
    np.savez(args.out, **outputs)
    print(f"{len(outputs['pid'])} samples through {len(np.unique(outputs['pid']))} worker process(es); "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
