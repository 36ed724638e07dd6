"""examples/data_parallel/train.py, launched as its docstring says: ``torchrun --nproc-per-node 2`` (gloo) and
``mpirun -n 2`` (MPI). Both train, rank 0 alone prints and writes the checkpoint, and ``--resume`` restarts from
it at a later epoch; the checkpoint loads in a fresh Python model whose weights equal what rank 0 wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.distribute.dp_launch import mpi_missing, mpirun
from tests.examples.processes import ROOT, run_example

SCRIPT = ROOT / "examples" / "data_parallel" / "train.py"
ARGS = ["--samples", "256", "--batch-size", "16", "--timeout", "60"]


def _torchrun(*args: str) -> str:
    """``torchrun --standalone --nproc-per-node 2 train.py ARGS`` (as ``python -m torch.distributed.run``)."""
    return run_example([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(SCRIPT), *ARGS, *args], 300.0, "torchrun")


def _checked(out: str, engine: str, epochs: int) -> None:
    summaries = [line for line in out.splitlines() if "rank(s) on" in line]
    assert len(summaries) == 1 and summaries[0].startswith(f"2 rank(s) on {engine}:"), out  # rank 0 alone prints
    assert sum("/step - " in line for line in out.splitlines()) == epochs, out  # one progress line per epoch


def _weights(path: Path) -> list[np.ndarray]:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train
    finally:
        sys.path.remove(str(SCRIPT.parent))
    model = train.build_model("reference")
    model.load_weights(str(path))
    return model.get_weights()


@pytest.mark.parametrize("engine", ["gloo", "mpi"])
def test_example_trains_checkpoints_and_resumes(engine, tmp_path):
    checkpoint = tmp_path / "dp.weights.h5"
    if engine == "gloo":
        def run(*args):
            return _torchrun(*args)
    else:
        if mpi_missing():
            pytest.skip(mpi_missing())

        def run(*args):
            code, out, _ = mpirun([str(SCRIPT), "--backend", "mpi", *ARGS, *args], timeout=300.0)
            assert code == 0, out
            return out
    _checked(run("--epochs", "1", "--checkpoint", str(checkpoint)), engine, epochs=1)
    first = _weights(checkpoint)
    _checked(run("--epochs", "3", "--resume", "1", "--checkpoint", str(checkpoint)), engine, epochs=2)
    resumed = _weights(checkpoint)
    assert any(not np.allclose(a, b) for a, b in zip(first, resumed))  # the restart went on training
