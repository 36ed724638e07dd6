"""Running an example as its user would: a child process in a session of its own, whose whole process group
(launchers' workers and daemons included) is killed past a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(command: list[str], timeout: float, what: str) -> str:
    """``command``'s standard output (graphc importable from the checkout, one OpenMP thread); a failure or a
    run past ``timeout`` seconds fails the test with both outputs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{what} did not finish within {timeout:g} s:\n{out}\n{err}")
    assert proc.returncode == 0, f"{what} failed:\n{out}\n{err}"
    return out
