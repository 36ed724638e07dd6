"""Starting the 2 ranks of tests/distribute/dp_worker.py on this machine, as torchrun (gloo over loopback
TCP) or mpirun (Open MPI) would, and the single process they are compared with."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.distribute import dp_worker

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(dp_worker.__file__)
RANKS = 2


@dataclass
class Run:
    codes: list[int]  # each rank's exit status (gloo) or mpirun's, once (mpi)
    outs: list[Path]  # what each rank saved
    stderr: str
    seconds: float

    def saved(self, rank: int):
        return np.load(self.outs[rank])


def mpi_missing() -> str | None:
    """Why the MPI engine cannot run here, or None."""
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (Open MPI: apt-get install openmpi-bin libopenmpi-dev)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'graphc[distributed]')"
    return None


def _env(dp_timeout: float, **extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), DP_TIMEOUT=str(dp_timeout), OMP_NUM_THREADS="1", **extra)


def _outs(tmp_path: Path, mode: str, model: str, target: str) -> list[Path]:
    return [tmp_path / f"{mode}_{model}_{target}_rank{rank}.npz" for rank in range(RANKS)]


def launch(engine: str, mode: str, target: str, batch: int, tmp_path: Path, model: str = "mlp",
           timeout: float = 60.0, dp_timeout: float = 60.0) -> Run:
    """2 ranks of ``dp_worker.py MODE OUT TARGET BATCH MODEL ENGINE``; killed after ``timeout`` seconds."""
    if engine == "mpi":
        return _launch_mpi(mode, target, batch, tmp_path, model, timeout, dp_timeout)
    return _launch_gloo(mode, target, batch, tmp_path, model, timeout, dp_timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_ranks(argv: Callable[[int], list[str]], timeout: float, dp_timeout: float = 60.0
               ) -> tuple[list[int], list[str], float]:
    """Start the ranks as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), rank ``r``
    running ``python *argv(r)``; returns (return codes, stderr texts, seconds). Killed after ``timeout``."""
    port = free_port()
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, *argv(rank)],
                              env=_env(dp_timeout, RANK=str(rank), WORLD_SIZE=str(RANKS), LOCAL_RANK=str(rank),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(RANKS)]
    codes, errors = [], []
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
            codes.append(p.returncode)
            errors.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes, errors, time.monotonic() - start


def _launch_gloo(mode, target, batch, tmp_path, model, timeout, dp_timeout) -> Run:
    outs = _outs(tmp_path, mode, model, target)
    codes, errors, seconds = gloo_ranks(
        lambda rank: [str(WORKER), mode, str(outs[rank]), target, str(batch), model, "gloo"], timeout, dp_timeout)
    return Run(codes, outs, "\n".join(errors), seconds)


def _launch_mpi(mode, target, batch, tmp_path, model, timeout, dp_timeout) -> Run:
    outs = _outs(tmp_path, mode, model, target)
    pattern = str(outs[0]).replace("rank0", "rank{rank}")
    code, output, seconds = mpirun([str(WORKER), mode, pattern, target, str(batch), model, "mpi"], timeout,
                                   dp_timeout)
    return Run([code], outs, output, seconds)


def mpirun(script_and_args: list[str], timeout: float = 60.0, dp_timeout: float = 60.0,
           cwd: Path | None = None) -> tuple[int, str, float]:
    """``mpirun -n 2 python SCRIPT ARGS...``; returns (mpirun's exit status, its output, seconds). Killed
    (an AssertionError) after ``timeout`` seconds."""
    # root may run mpirun in a container; shared memory without CMA (ptrace is often denied there)
    env = _env(dp_timeout, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    command = ["mpirun", "-n", str(RANKS), "--oversubscribe", "--bind-to", "none", sys.executable, *script_and_args]
    start = time.monotonic()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # mpirun ends its ranks on SIGTERM
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"mpirun did not end within {timeout:g} s:\n{out}\n{err}") from None
    return proc.returncode, out + err, time.monotonic() - start


def shuffle_seed() -> int:
    """The seed 2 ranks shuffle with: rank 0 draws it from np.random seeded with SHUFFLE_SEED."""
    np.random.seed(dp_worker.SHUFFLE_SEED)
    return int(np.random.randint(2 ** 31 - 1))


def single_process(target: str, batch: int, model: str = "mlp"):
    """One process fitting ``model`` with batch 2b, in the order 2 ranks shuffle the samples in; returns
    (weights, logged losses)."""
    net = dp_worker.build(target, model)
    x, y = dp_worker.data(model)
    np.random.seed(shuffle_seed())
    history = net.fit(x, y, batch_size=RANKS * batch, epochs=dp_worker.EPOCHS, shuffle=True, verbose=0)
    return net.get_weights(), history.history["loss"]


def assert_ranks_equal_single(run: Run, weights: list[np.ndarray], losses, initial: list[np.ndarray]) -> None:
    """Both ranks hold the same weights, equal to ``weights`` (rtol 1e-5), different from ``initial``,
    and logged ``losses``."""
    ranks = [run.saved(rank) for rank in range(RANKS)]
    assert len([k for k in ranks[0] if k.startswith("w")]) == len(weights)
    for i, want in enumerate(weights):
        np.testing.assert_array_equal(ranks[0][f"w{i}"], ranks[1][f"w{i}"], err_msg=f"weight {i}: ranks differ")
        np.testing.assert_allclose(ranks[0][f"w{i}"], want, rtol=1e-5, atol=1e-7, err_msg=f"weight {i}")
        assert not np.allclose(want, initial[i]), f"weight {i} did not train"
    np.testing.assert_allclose(ranks[0]["loss"], losses, rtol=1e-5)
    np.testing.assert_array_equal(ranks[0]["loss"], ranks[1]["loss"])
