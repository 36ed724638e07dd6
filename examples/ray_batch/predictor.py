"""The worker side of batch inference: a compiled model library and its weights file, nothing else.

A worker (a Ray actor, a multiprocessing worker, a thread of a server) creates one
:class:`LibraryPredictor` and calls it on every batch it is given. It loads ``libNAME.so`` through
graphc's binding of the C ABI (:mod:`graphc.runtime`, ctypes: the same calls a C program makes) and
creates one instance, reading the weights from ``NAME.weights``; it needs neither the model's Python
code nor its graph, so the three files ``graphc compile MODEL --target native --weights external``
writes are all a worker needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROW = "row"  # a column carried through unchanged, so that outputs can be put back in input order

_instances_created = 0  # in this process: each worker creates exactly one instance


class LibraryPredictor:
    """``predictor(batch)``: a batch (a dict of arrays by the model's input names) to a dict of arrays by
    the model's output names, plus ``row`` when the batch has it, and ``pid`` and ``instance`` (the process
    that ran it and the ordinal of its instance there, 1 when the worker created one instance)."""

    def __init__(self, directory: str, name: str, threads: int = 1):
        global _instances_created
        from graphc.runtime import Library

        folder = Path(directory)
        library = Library(folder / f"lib{name}.so", name)
        weights = folder / f"{name}.weights"
        if not library.has_embedded_weights and not weights.is_file():
            raise FileNotFoundError(f"library {name!r} keeps its weights in a separate file and {weights} is missing")
        self.instance = library.instance(threads=threads,
                                         weights_path=None if library.has_embedded_weights else str(weights))
        self.inputs = [(t.name, t.dtype) for t in library.inputs]
        self.outputs = [t.name for t in library.outputs]
        _instances_created += 1
        self.ordinal = _instances_created

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name, _ in self.inputs if name not in batch]
        if missing:
            raise KeyError(f"the batch has columns {sorted(batch)}; the model's inputs {missing} are missing")
        arrays = [np.ascontiguousarray(batch[name], dtype=dtype) for name, dtype in self.inputs]
        result = dict(zip(self.outputs, self.instance.run(arrays)))
        n = len(arrays[0])
        if ROW in batch:
            result[ROW] = np.asarray(batch[ROW])
        result["pid"] = np.full(n, os.getpid(), dtype=np.int64)
        result["instance"] = np.full(n, self.ordinal, dtype=np.int64)
        return result


def load_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``inputs.npz`` file (written by export.py), by the model's input names."""
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}
