"""Batch inference over a Ray Dataset with a compiled library: each worker loads the library once.

    python export.py --model mlp --out build                  # libmlp.so, mlp.h, mlp.weights, inputs.npz
    python ray_predict.py build mlp --out outputs.npz          # a local Ray instance on 2 CPUs
    python ray_predict.py build mlp --address auto             # an existing cluster (ray start --head ...)

``Dataset.map_batches(LibraryPredictor, compute=ActorPoolStrategy(size=2), ...)`` starts two actors; each creates one
:class:`~predictor.LibraryPredictor` (one library instance, weights read from ``NAME.weights``) and then
serves every batch Ray hands it. The actors receive only the folder and the library's name: on a cluster
the folder must be readable on every node (shared storage, or shipped with ``runtime_env``'s
``working_dir``). The outputs are put back in input order (the ``row`` column) and written to ``--out``
(an ``.npz`` by output name, plus ``pid`` and ``instance``: which worker process ran each sample, and that
it was the first instance that process created).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # predictor.py, for this driver and Ray's workers

from predictor import ROW, LibraryPredictor, load_inputs  # noqa: E402


def predict(directory: str, name: str, inputs: dict[str, np.ndarray], *, batch_size: int = 64,
            concurrency: int = 2, threads: int = 1) -> dict[str, np.ndarray]:
    """Run library ``name`` of ``directory`` over ``inputs`` with ``concurrency`` Ray actors (Ray must be
    initialized); returns every output by name, in input order."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    n = len(next(iter(inputs.values())))
    columns = {ROW: pa.array(np.arange(n))}
    for column, array in inputs.items():
        columns[column] = ArrowTensorArray.from_numpy(np.ascontiguousarray(array)) if array.ndim > 1 \
            else pa.array(array)
    table = pa.table(columns)
    # one block per batch, made here: the actors then hold every CPU of the instance, and no other task needs one
    dataset = ray.data.from_arrow([table.slice(start, batch_size) for start in range(0, n, batch_size)])
    results = dataset.map_batches(LibraryPredictor, fn_constructor_kwargs={"directory": str(Path(directory).resolve()),
                                                                            "name": name, "threads": threads},
                                  compute=ray.data.ActorPoolStrategy(size=concurrency), batch_size=batch_size,
                                  num_cpus=threads, batch_format="numpy")
    batches = list(results.iter_batches(batch_format="numpy", batch_size=None))
    outputs = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    order = np.argsort(outputs.pop(ROW), kind="stable")
    return {key: value[order] for key, value in outputs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory", help="the folder export.py (or graphc compile --weights external) wrote")
    p.add_argument("name", help="the library's name (libNAME.so)")
    p.add_argument("--inputs", default=None, help="an .npz of inputs by name (default DIRECTORY/inputs.npz)")
    p.add_argument("--out", default="outputs.npz")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=2, help="actors, each with its own library instance")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (and CPUs reserved) per actor")
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: a local instance)")
    p.add_argument("--object-store-mb", type=int, default=256, help="the local instance's object store")
    args = p.parse_args(argv)

    import ray

    inputs = load_inputs(args.inputs or Path(args.directory) / "inputs.npz")
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.concurrency * args.threads, include_dashboard=False,
                 object_store_memory=args.object_store_mb * 2 ** 20, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        outputs = predict(args.directory, args.name, inputs, batch_size=args.batch_size,
                          concurrency=args.concurrency, threads=args.threads)
    finally:
        ray.shutdown()
    np.savez(args.out, **outputs)
    workers = np.unique(outputs["pid"])
    print(f"{len(outputs['pid'])} samples through {len(workers)} Ray worker(s); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
