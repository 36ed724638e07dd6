"""The few collective operations data-parallel training needs, one small object per engine.

:class:`~graphc.distribute.DataParallel` talks to a :class:`Collectives` object and never to an engine
directly: an in-place sum of a NumPy array across ranks (bucketed, started without waiting so that
several reductions travel together), a broadcast from rank 0, and the rank and world size. Two engines:

- :class:`GlooCollectives`: ``torch.distributed``'s gloo backend over TCP (launched by ``torchrun``).
  A peer that dies closes its connections, which fails the next collective at once; a peer that
  stops answering is given up after the process group's ``timeout``.
- :class:`MpiCollectives`: mpi4py over the MPI library it was built against (Open MPI, MPICH; launched
  by ``mpirun``). MPI collectives have no timeout, so each wait polls non-blocking requests against a
  deadline. Open MPI ends the whole job when one rank exits abnormally: ``mpirun`` sends the other
  ranks SIGTERM and, ``odls_base_sigkill_timeout`` seconds later (1 by default), SIGKILL. The survivors
  turn that SIGTERM into a :class:`DistributedError`. A rank whose collective failed otherwise (its peers
  silent past the timeout, an error MPI reported) aborts the job at exit (``MPI_Abort``) instead of
  hanging in ``MPI_Finalize`` beside peers that will never answer.

Every failure is a :class:`DistributedError` naming this rank, the world size and the operation.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import numpy as np


class DistributedError(RuntimeError):
    """A collective failed: a peer process died or stopped answering within the timeout."""


class Collectives:
    """What every engine provides; ``timeout``: seconds a collective waits for its peers; ``bucket_bytes``:
    the largest piece of an array one reduction or broadcast call carries."""

    engine = ""

    def __init__(self, timeout: float, bucket_bytes: int):
        self.timeout = float(timeout)
        self.bucket_bytes = int(bucket_bytes)
        self.rank = 0
        self.world_size = 1

    def all_reduce_sum(self, array: np.ndarray, what: str = "an all-reduce") -> None:
        """Sum a contiguous array across ranks in place."""
        self.wait(self.start_all_reduce(array, what), what)

    def start_all_reduce(self, array: np.ndarray, what: str = "an all-reduce") -> list:
        """Start summing ``array`` across ranks in place; returns the pending operations for :meth:`wait`.
        The array must stay untouched until then."""
        raise NotImplementedError

    def wait(self, pending: list, what: str) -> None:
        """Wait for operations :meth:`start_all_reduce` started (``what`` names them in an error)."""
        raise NotImplementedError

    def broadcast(self, array: np.ndarray, what: str = "a broadcast") -> np.ndarray:
        """Rank 0's ``array`` on every rank (a new contiguous array of the same shape and dtype)."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release what this object set up (idempotent)."""

    def error(self, what: str, why: str) -> DistributedError:
        return DistributedError(f"rank {self.rank} of {self.world_size}: {what} failed - {why}")

    def _pieces(self, array: np.ndarray) -> list[np.ndarray]:
        """``array``'s flat view cut into pieces of at most ``bucket_bytes`` (views, not copies)."""
        flat = array.reshape(-1)
        if not flat.flags.c_contiguous or not flat.flags.writeable or not np.shares_memory(flat, array):
            raise ValueError(f"{self.engine} collectives need a writable C-contiguous array")
        step = max(1, self.bucket_bytes // max(flat.itemsize, 1))
        return [flat[start:start + step] for start in range(0, flat.size, step)]


class GlooCollectives(Collectives):
    """``torch.distributed`` with the gloo backend; the process group is created here when none exists
    (``init_method``, ``rank``, ``world_size`` as ``init_process_group`` takes them; the default
    ``env://`` reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, which ``torchrun`` sets)."""

    engine = "gloo"

    def __init__(self, timeout: float, bucket_bytes: int, init_method: str | None = None, rank: int | None = None,
                 world_size: int | None = None):
        super().__init__(timeout, bucket_bytes)
        try:
            import torch.distributed as dist
        except ImportError as exc:  # pragma: no cover - torch comes with the keras extra
            raise ImportError("DataParallel(backend='gloo') needs PyTorch (pip install torch)") from exc
        self._created = False
        if not dist.is_initialized():
            if init_method is None and "RANK" not in os.environ and rank is None:
                raise RuntimeError("DataParallel found no process group: launch the script with torchrun "
                                   "(torchrun --nproc-per-node 2 train.py), which sets RANK, WORLD_SIZE, "
                                   "MASTER_ADDR and MASTER_PORT, or pass init_method, rank and world_size")
            kwargs = {"init_method": init_method or "env://", "timeout": timedelta(seconds=self.timeout)}
            if rank is not None:
                kwargs.update(rank=int(rank), world_size=int(world_size))
            dist.init_process_group("gloo", **kwargs)
            self._created = True
            atexit.register(self.shutdown)  # gloo's threads must stop before the interpreter does
        self.dist = dist
        self.rank = int(dist.get_rank())
        self.world_size = int(dist.get_world_size())

    def _call(self, what: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, DistributedError):
                raise
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise self.error(what, f"a peer process died, closed its connection or did not answer within "
                                   f"{self.timeout:g} s ({type(exc).__name__}: {detail})") from exc

    def start_all_reduce(self, array: np.ndarray, what: str = "an all-reduce") -> list:
        import torch

        return [self._call(f"starting {what}", self.dist.all_reduce, torch.from_numpy(piece),
                           op=self.dist.ReduceOp.SUM, async_op=True) for piece in self._pieces(array)]

    def wait(self, pending: list, what: str) -> None:
        for work in pending:
            self._call(what, work.wait)

    def broadcast(self, array: np.ndarray, what: str = "a broadcast") -> np.ndarray:
        import torch

        out = np.array(array, copy=True, order="C")
        for piece in self._pieces(_bytes(out)):
            self._call(what, self.dist.broadcast, torch.from_numpy(piece), src=0)
        return out

    def shutdown(self) -> None:
        if self._created and self.dist.is_initialized():
            self.dist.destroy_process_group()
        self._created = False


class MpiCollectives(Collectives):
    """mpi4py on a duplicate of ``MPI.COMM_WORLD`` (graphc's messages never meet the script's own): every
    reduction and broadcast is a non-blocking request (``Iallreduce``, ``Ibcast``), polled until done or
    until ``timeout`` seconds have passed."""

    engine = "mpi"
    _LONGEST_PAUSE = 1e-3  # seconds between two polls of a slow collective

    def __init__(self, timeout: float, bucket_bytes: int):
        super().__init__(timeout, bucket_bytes)
        try:
            from mpi4py import MPI
        except (ImportError, RuntimeError) as exc:  # RuntimeError: mpi4py found no MPI library to load
            raise ImportError(f"DataParallel(backend='mpi') needs mpi4py and an MPI library it loads: pip install "
                              f"'graphc[distributed]' (Open MPI on Debian: apt-get install openmpi-bin "
                              f"libopenmpi-dev); {type(exc).__name__}: {exc}") from exc
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)  # errors as exceptions, not an abort inside the library
        self.rank = int(self.comm.Get_rank())
        self.world_size = int(self.comm.Get_size())
        self.failure: str | None = None  # the error of a collective that failed (the job is aborted at exit)
        self._running: str | None = None  # the operation a SIGTERM interrupts
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        atexit.register(self._abort_if_failed)

    def _fail(self, what: str, why: str) -> DistributedError:
        error = self.error(what, why)
        self.failure = str(error)
        return error

    def _on_sigterm(self, signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        what = self._running or "the work between two collectives"
        # no MPI_Abort at exit: mpirun is already ending the job (a second abort would only blur its message)
        raise self.error(what, "mpirun is ending the job (SIGTERM), as Open MPI does when another rank exits "
                               "abnormally (mpirun's message names that rank) or when the job is cancelled")

    def _abort_if_failed(self) -> None:
        """At exit after a failed collective: end the whole job rather than wait in MPI_Finalize for peers
        that will never answer."""
        if self.failure is not None and not self.MPI.Is_finalized():
            sys.stdout.flush()
            # Open MPI's own MPI_ABORT notice is sometimes lost in a race with the job's teardown
            sys.stderr.write(f"graphc: {self.failure}; aborting the MPI job\n")
            sys.stderr.flush()
            self.comm.Abort(1)

    def _start(self, what: str, call, *args) -> object:
        try:
            return call(*args)
        except self.MPI.Exception as exc:
            raise self._fail(what, f"MPI reported {exc.Get_error_string().strip()}") from exc

    def start_all_reduce(self, array: np.ndarray, what: str = "an all-reduce") -> list:
        if array.dtype.kind not in "fiu":
            raise TypeError(f"mpi collectives sum numeric arrays, not {array.dtype}")
        # each request keeps its piece: the buffer must outlive the request
        return [(self._start(f"starting {what}", self.comm.Iallreduce, self.MPI.IN_PLACE, piece, self.MPI.SUM),
                 piece) for piece in self._pieces(array)]

    def wait(self, pending: list, what: str) -> None:
        requests = [request for request, _ in pending]
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        self._running = what
        try:
            while not self.MPI.Request.Testall(requests):
                if time.monotonic() > deadline:
                    raise self._fail(what, f"a peer process did not answer within {self.timeout:g} s")
                time.sleep(pause)
                pause = min(max(2 * pause, 2e-5), self._LONGEST_PAUSE)
        except self.MPI.Exception as exc:
            raise self._fail(what, f"a peer process died or its connection broke (MPI reported "
                                   f"{exc.Get_error_string().strip()})") from exc
        finally:
            self._running = None

    def broadcast(self, array: np.ndarray, what: str = "a broadcast") -> np.ndarray:
        out = np.array(array, copy=True, order="C")
        self.wait([(self._start(f"starting {what}", self.comm.Ibcast, piece, 0), piece)
                   for piece in self._pieces(_bytes(out))], what)
        return out

    def shutdown(self) -> None:
        if self._previous_sigterm is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None
        if self.failure is None and self.comm != self.MPI.COMM_NULL and not self.MPI.Is_finalized():
            self.comm.Free()


def _bytes(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes, as a flat uint8 view: a broadcast copies bytes, whatever the dtype."""
    return array.reshape(-1).view(np.uint8)


def make_collectives(backend: str, timeout: float, bucket_bytes: int, init_method: str | None = None,
                     rank: int | None = None, world_size: int | None = None) -> Collectives:
    """The collectives of engine ``backend`` (``"gloo"`` or ``"mpi"``), its process group set up."""
    if backend == "mpi":
        return MpiCollectives(timeout, bucket_bytes)
    return GlooCollectives(timeout, bucket_bytes, init_method, rank, world_size)


__all__ = ["Collectives", "DistributedError", "GlooCollectives", "MpiCollectives", "make_collectives"]
