"""Data-parallel ``fit``: every process (rank) holds a replica of the model and its compiled step.

What :class:`DataParallel` does around each training batch:

- each rank runs the gradient step on its share of the global batch (``batch_size`` samples per rank,
  so a global batch of ``batch_size * world_size``), which writes the gradients into the step's flat
  gradient buffer (for a native step: the instance's own memory, seen through a NumPy view);
- one small all-reduce sums the batch sizes, losses and metric totals, so every rank logs the global
  values; each rank scales its buffer by its share of the samples and one all-reduce (in buckets of
  ``bucket_mb`` when the buffer is larger) sums it in place: the buffer then holds the gradient of the
  global batch's loss, which the apply step (clipping included) turns into the same update on every rank.

At the start of ``fit`` rank 0's weights and optimizer state are broadcast and every rank seeds NumPy's
global generator with one seed drawn by rank 0, so ``shuffle`` orders the samples identically everywhere;
each rank then takes its contiguous share of every global batch. Only rank 0 shows the progress bar and
runs the callbacks that write files (ModelCheckpoint, TensorBoard, CSVLogger); the others run the rest.
BatchNormalization keeps per-replica batch statistics (Keras's data parallelism does the same).

A rank that dies makes the others' next collective fail: gloo reports the closed connection at once, and
a peer that stops answering is given up after ``timeout`` seconds; either way the survivors raise
:class:`DistributedError` naming their rank, the world and the operation.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import numpy as np

_WRITERS = ("ModelCheckpoint", "TensorBoard", "CSVLogger", "ProgbarLogger")


class DistributedError(RuntimeError):
    """A collective failed: a peer process died or stopped answering within the timeout."""


class DataParallel:
    """Synchronous data parallelism over ``torch.distributed`` (``backend="gloo"``, TCP).

    ``timeout``: seconds a collective waits for its peers before failing; ``bucket_mb``: the largest
    piece of the gradient buffer one all-reduce call carries (a larger buffer goes in several calls);
    ``sync_batchnorm``: reduce BatchNormalization's batch statistics across ranks (not implemented:
    refused); ``init_method``, ``rank``, ``world_size``: passed to ``init_process_group`` when no
    process group exists yet (the default ``env://`` reads what ``torchrun`` sets: ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)."""

    def __init__(self, backend: str = "gloo", *, timeout: float = 300.0, bucket_mb: float = 25.0,
                 sync_batchnorm: bool = False, init_method: str | None = None, rank: int | None = None,
                 world_size: int | None = None):
        if backend == "mpi":
            raise NotImplementedError("DataParallel(backend='mpi') is not available: graphc has no MPI collectives "
                                      "(mpi4py all-reduce of the gradient buffer) yet; use backend='gloo' and launch "
                                      "with torchrun")
        if backend != "gloo":
            raise ValueError(f"DataParallel(backend={backend!r}): the supported backend is 'gloo' "
                             "(torch.distributed over TCP)")
        if sync_batchnorm:
            raise NotImplementedError("DataParallel(sync_batchnorm=True) is not implemented: BatchNormalization uses "
                                      "per-replica batch statistics (the default, as in Keras)")
        if not timeout > 0:
            raise ValueError(f"DataParallel(timeout={timeout!r}) must be a positive number of seconds")
        if not bucket_mb > 0:
            raise ValueError(f"DataParallel(bucket_mb={bucket_mb!r}) must be positive")
        self.backend = backend
        self.timeout = float(timeout)
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.sync_batchnorm = False
        self._init = (init_method, rank, world_size)
        self._dist = None
        self._global_batch: int | None = None  # samples in the global batch of the share last handed out

    # ------------------------------------------------------------------ the process group
    @property
    def dist(self):
        """``torch.distributed`` with this object's process group initialized."""
        if self._dist is None:
            try:
                import torch.distributed as dist
            except ImportError as exc:  # pragma: no cover - torch is a dependency of the extra
                raise ImportError("DataParallel(backend='gloo') needs PyTorch (pip install torch)") from exc
            if not dist.is_initialized():
                init_method, rank, world_size = self._init
                if init_method is None and "RANK" not in os.environ and rank is None:
                    raise RuntimeError("DataParallel found no process group: launch the script with torchrun "
                                       "(torchrun --nproc-per-node 2 train.py), which sets RANK, WORLD_SIZE, "
                                       "MASTER_ADDR and MASTER_PORT, or pass init_method, rank and world_size")
                kwargs = {"init_method": init_method or "env://", "timeout": timedelta(seconds=self.timeout)}
                if rank is not None:
                    kwargs.update(rank=int(rank), world_size=int(world_size))
                dist.init_process_group(self.backend, **kwargs)
                atexit.register(self.shutdown)  # gloo's threads must stop before the interpreter does
            self._dist = dist
        return self._dist

    def shutdown(self) -> None:
        """Destroy the process group this object created (at exit, or earlier when called)."""
        dist = self._dist
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()
        self._dist = None

    @property
    def rank(self) -> int:
        return int(self.dist.get_rank())

    @property
    def world_size(self) -> int:
        return int(self.dist.get_world_size())

    def _collective(self, what: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, DistributedError):
                raise
            raise DistributedError(f"rank {self.rank} of {self.world_size}: {what} failed - a peer process died, "
                                   f"closed its connection or did not answer within {self.timeout:g} s "
                                   f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
                                   ) from exc

    def all_reduce_sum(self, array: np.ndarray, what: str = "an all-reduce") -> None:
        """Sum a contiguous array across ranks in place (in buckets of ``bucket_mb``)."""
        self.wait(self.start_all_reduce(array), what)

    def start_all_reduce(self, array: np.ndarray) -> list:
        """Start summing ``array`` across ranks in place (in buckets of ``bucket_mb``); returns the pending
        operations for :meth:`wait`. The array must stay untouched until then."""
        import torch

        flat = array.reshape(-1)
        if not flat.flags.c_contiguous or not flat.flags.writeable:
            raise ValueError("all-reduce needs a writable C-contiguous array")
        tensor = torch.from_numpy(flat)
        step = max(1, self.bucket_bytes // max(flat.itemsize, 1))
        return [self._collective("starting an all-reduce", self.dist.all_reduce, tensor[start:start + step],
                                 op=self.dist.ReduceOp.SUM, async_op=True) for start in range(0, flat.size, step)]

    def wait(self, pending: list, what: str) -> None:
        for work in pending:
            self._collective(what, work.wait)

    def broadcast(self, array: np.ndarray, what: str = "a broadcast") -> np.ndarray:
        """Rank 0's ``array`` on every rank (a new contiguous array)."""
        import torch

        out = np.ascontiguousarray(np.array(array, copy=True))
        self._collective(what, self.dist.broadcast, torch.from_numpy(out.reshape(-1)), src=0)
        return out

    # ------------------------------------------------------------------ fit's hooks
    def begin_fit(self, model) -> None:
        """Rank 0's weights, optimizer state and shuffling seed on every rank."""
        trainer = model._graphc_trainer
        for var in model.weights:
            var.assign(self.broadcast(var.value, f"broadcasting weight {var.path!r} from rank 0"))
        opt = trainer.optimizer
        for per in opt.slots.values():
            for name in list(per):
                per[name] = self.broadcast(per[name], "broadcasting the optimizer state from rank 0")
        opt._iterations = int(self.broadcast(np.asarray([opt._iterations], np.int64), "broadcasting iterations")[0])
        seed = self.broadcast(np.asarray([np.random.randint(2 ** 31 - 1)], np.int64), "broadcasting the seed")
        np.random.seed(int(seed[0]))
        runner = trainer.runner
        if runner is not None and hasattr(runner, "split_step"):
            runner.split_step = True  # native libraries are built with their gradient and apply steps

    def fit_callbacks(self, callbacks, verbose):
        """(callbacks, verbose) for this rank: rank 0's unchanged; elsewhere no progress bar and no file writers."""
        if self.rank == 0:
            return callbacks, verbose
        kept = [cb for cb in (callbacks or []) if type(cb).__name__ not in _WRITERS]
        return kept, 0

    def shard(self, index: np.ndarray) -> np.ndarray | None:
        """This rank's contiguous share of one global batch's sample indices (None when the batch has fewer
        samples than ranks: every rank skips it)."""
        if len(index) < self.world_size:
            return None
        self._global_batch = len(index)
        return np.array_split(np.asarray(index), self.world_size)[self.rank]

    def train_step(self, step, feeds: dict, targets: list, sample_weights: list | None, n: int):
        """One synchronous step on this rank's share of the batch; returns (the reported outputs with the
        global batch's losses and metric totals, the global number of samples)."""
        result = dict(step.compute_gradients(feeds, targets, sample_weights))
        out = step.outputs
        losses = [out.loss] + [v for _, v in out.output_losses]
        totals = [v for m in out.metrics for v in m[2:]]
        stats = np.concatenate([[float(n)], [float(result[v]) * n for v in losses]]
                               + [np.asarray(result[v], np.float64).reshape(-1) for v in totals])
        buffer = step.gradient_buffer()
        if buffer.dtype != np.float32:
            raise TypeError("DataParallel averages float32 gradient buffers; this model has gradients of other "
                            "dtypes")
        # each rank's share of the global batch is known from its size: weight the gradient by it, so the
        # sum is the global batch's gradient (1/world_size for equal shares), and reduce both at once
        expected = self._global_batch if self._global_batch is not None else n * self.world_size
        buffer *= np.float32(n / expected)
        pending = self.start_all_reduce(stats) + self.start_all_reduce(buffer)
        self.wait(pending, "the all-reduce of the gradients")
        total = stats[0]
        if total != expected:
            raise DistributedError(f"rank {self.rank} of {self.world_size}: the ranks' batches hold {total:g} "
                                   f"samples, {expected} expected: every rank must see the same global batches")
        step.apply_gradients()
        for k, v in enumerate(losses):
            result[v] = np.asarray(stats[1 + k] / total, dtype=np.asarray(result[v]).dtype)
        offset = 1 + len(losses)
        for v in totals:
            a = np.asarray(result[v])
            result[v] = stats[offset:offset + a.size].reshape(a.shape).astype(a.dtype)
            offset += a.size
        return result, int(total)

    def __repr__(self) -> str:
        return f"DataParallel(backend={self.backend!r}, timeout={self.timeout:g})"
