"""examples/ray_batch: a compiled library exported with its weights file serves batch inference on Ray
(map_batches with an actor pool, on a local instance) and on a multiprocessing pool, each worker creating
one instance from the files alone; both give the outputs of a single-process predict of the same model."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.examples.processes import ROOT, run_example

EXAMPLE = ROOT / "examples" / "ray_batch"
SAMPLES = 200  # not a multiple of the batch size: the last batch is a short one
BATCH = 64

ray_missing = importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None


def _run(script: str, *args: str, timeout: float) -> str:
    return run_example([sys.executable, str(EXAMPLE / script), *args], timeout, script)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(name)``: (the folder export.py wrote for seed model ``name``, the single-process native predict
    of that model on the folder's inputs, a list in output order); each model is exported once."""
    import graphc
    from graphc import examples

    done: dict[str, tuple[Path, list[np.ndarray]]] = {}

    def export(name: str) -> tuple[Path, list[np.ndarray]]:
        if name not in done:
            folder = tmp_path_factory.mktemp(name)
            _run("export.py", "--model", name, "--samples", str(SAMPLES), "--out", str(folder), timeout=300)
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                [f"lib{name}.so", f"lib{name}.a", f"{name}.h", f"{name}.weights", "inputs.npz"])
            with np.load(folder / "inputs.npz") as archive:
                inputs = {k: archive[k] for k in archive.files}
            compiled = graphc.build(examples.build(name, seed=0), target="native", threads=1)
            outputs = compiled.predict(inputs, batch_size=SAMPLES)
            outputs = outputs if isinstance(outputs, list) else [outputs]
            assert all(len(o) == SAMPLES for o in outputs)
            done[name] = folder, outputs
        return done[name]

    return export


def _check(path: Path, want: list[np.ndarray], workers: int) -> None:
    with np.load(path) as archive:
        got = {k: archive[k] for k in archive.files}
    pids, ordinals = got.pop("pid"), got.pop("instance")
    assert len(got) == len(want), sorted(got)
    for (column, value), expected in zip(got.items(), want):  # outputs in the library's order
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=column)
    assert len(pids) == SAMPLES and os.getpid() not in pids
    assert 1 <= len(np.unique(pids)) <= workers
    np.testing.assert_array_equal(ordinals, 1)  # every worker served all its batches with its first instance


@pytest.mark.parametrize("name", ["mlp", "siamese_lstm"])  # one input; two inputs of free length
def test_pool_outputs_equal_one_process_predict(exported, name, tmp_path):
    folder, want = exported(name)
    out = tmp_path / "pool.npz"
    printed = _run("pool.py", str(folder), name, "--out", str(out), "--batch-size", str(BATCH), "--processes", "2",
                   timeout=300)
    assert f"{SAMPLES} samples" in printed
    _check(out, want, workers=2)


@pytest.mark.slow
@pytest.mark.skipif(ray_missing, reason='Ray Data is not installed (pip install "ray[data]")')
def test_ray_map_batches_outputs_equal_one_process_predict(exported, tmp_path):
    name = "mlp"
    folder, want = exported(name)
    out = tmp_path / "ray.npz"
    printed = _run("ray_predict.py", str(folder), name, "--out", str(out), "--batch-size", str(BATCH),
                   "--concurrency", "2", timeout=300)
    assert f"{SAMPLES} samples" in printed
    _check(out, want, workers=2)
