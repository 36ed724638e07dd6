"""Data-parallel ``fit``: every process (rank) holds a replica of the model and its compiled step.

What :class:`DataParallel` does around each training batch:

- each rank runs the gradient step on its share of the global batch (``batch_size`` samples per rank,
  so a global batch of ``batch_size * world_size``), which writes the gradients into the step's flat
  gradient buffer (for a native step: the instance's own memory, seen through a NumPy view);
- each rank scales its buffer by its share of the samples and one all-reduce (in buckets of ``bucket_mb``
  when the buffer is larger) sums it in place: the buffer then holds the gradient of the global batch's
  loss, which the apply step (clipping included) turns into the same update on every rank. Started with
  it, a small all-reduce sums the batch sizes, losses, metric totals and the layers' own state (the
  BatchNormalization moving statistics, weighted by the same shares), so every rank logs the global
  values and keeps the same state.

The collectives come from an engine (:mod:`graphc.distribute.collectives`): torch.distributed's gloo
backend (``backend="gloo"``, launched by ``torchrun``) or MPI through mpi4py (``backend="mpi"``, launched
by ``mpirun``). :meth:`DataParallel.all_reduce_sum` and :meth:`DataParallel.broadcast` are theirs.

At the start of ``fit`` rank 0's weights and optimizer state are broadcast and every rank seeds NumPy's
global generator with one seed drawn by rank 0, so ``shuffle`` orders the samples identically everywhere;
each rank then takes its contiguous share of every global batch. Only rank 0 shows the progress bar and
runs the callbacks that write files (ModelCheckpoint, TensorBoard, CSVLogger); the others run the rest.

BatchNormalization normalizes with per-replica batch statistics (each rank's share of the batch, as
``tf.distribute`` replicas do). Its moving statistics are replica state read as their mean (a
``tf.distribute`` ON_READ/MEAN variable): since a moving average is linear, averaging the replicas' moving
statistics after every step equals averaging them when read, so every rank holds
``moving = momentum * moving + (1 - momentum) * sum_r share_r * batch_statistic_r`` (``share_r``: rank r's
fraction of the global batch) and the ranks' models stay identical. With ``sync_batchnorm=True`` the batch
statistics themselves are the global batch's (:mod:`graphc.distribute.sync_batchnorm`): each rank's
sums and counts are summed across the ranks inside the gradient step, so every rank normalizes and moves
its statistics exactly as one process training on the whole global batch does.

A rank that dies makes the others' next collective fail: gloo reports the closed connection at once;
Open MPI's ``mpirun`` ends the job (SIGTERM, then SIGKILL a second later) and the survivors raise on the
SIGTERM; a peer that stops answering is given up after ``timeout`` seconds. Either way the survivors raise
:class:`DistributedError` naming their rank, the world and the operation.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from graphc.distribute import row_sparse, sync_batchnorm
from graphc.distribute.collectives import Collectives, DistributedError, make_collectives

_WRITERS = ("ModelCheckpoint", "TensorBoard", "CSVLogger", "ProgbarLogger")


class DataParallel:
    """Synchronous data parallelism over ``torch.distributed`` (``backend="gloo"``, TCP, launched by
    ``torchrun``) or MPI (``backend="mpi"``: mpi4py, launched by ``mpirun``).

    ``timeout``: seconds a collective waits for its peers before failing; ``bucket_mb``: the largest
    piece of the gradient buffer one all-reduce call carries (a larger buffer goes in several calls);
    ``sync_batchnorm``: BatchNormalization's batch statistics taken over the global batch (summed across
    the ranks inside the gradient step) instead of each rank's share; ``init_method``, ``rank``,
    ``world_size`` (gloo only): passed to ``init_process_group`` when no process group exists yet (the
    default ``env://`` reads what ``torchrun`` sets: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``); MPI takes the world ``mpirun`` started. ``row_sparse``: the gradients of large tables
    (embeddings) exchanged as the rows some rank wrote, when those are at most half the table
    (:mod:`graphc.distribute.row_sparse`; the same sums as the dense all-reduce)."""

    def __init__(self, backend: str = "gloo", *, timeout: float = 300.0, bucket_mb: float = 25.0,
                 sync_batchnorm: bool = False, init_method: str | None = None, rank: int | None = None,
                 world_size: int | None = None, row_sparse: bool = True):
        if backend not in ("gloo", "mpi"):
            raise ValueError(f"DataParallel(backend={backend!r}): the supported backends are 'gloo' "
                             "(torch.distributed over TCP, launched by torchrun) and 'mpi' (mpi4py, launched by "
                             "mpirun)")
        if backend == "mpi":
            if importlib.util.find_spec("mpi4py") is None:
                raise ImportError("DataParallel(backend='mpi') needs mpi4py built against an MPI library: "
                                  "pip install 'graphc[distributed]' (Open MPI on Debian: apt-get install "
                                  "openmpi-bin libopenmpi-dev)")
            given = [name for name, value in (("init_method", init_method), ("rank", rank),
                                              ("world_size", world_size)) if value is not None]
            if given:
                raise ValueError(f"DataParallel(backend='mpi') takes the world mpirun started; {', '.join(given)} "
                                 "apply to backend='gloo' only")
        if not timeout > 0:
            raise ValueError(f"DataParallel(timeout={timeout!r}) must be a positive number of seconds")
        if not bucket_mb > 0:
            raise ValueError(f"DataParallel(bucket_mb={bucket_mb!r}) must be positive")
        self.backend = backend
        self.timeout = float(timeout)
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.sync_batchnorm = bool(sync_batchnorm)
        self.row_sparse = bool(row_sparse)
        self._row_tables: dict[int, tuple] = {}
        self._init = (init_method, rank, world_size)
        self._collectives: Collectives | None = None
        self._global_batch: int | None = None  # samples in the global batch of the share last handed out

    # ------------------------------------------------------------------ the engine
    @property
    def collectives(self) -> Collectives:
        """The engine's collectives, its process group set up on first use."""
        if self._collectives is None:
            self._collectives = make_collectives(self.backend, self.timeout, self.bucket_bytes, *self._init)
        return self._collectives

    def shutdown(self) -> None:
        """Release the engine's process group (gloo's is also destroyed at exit)."""
        if self._collectives is not None:
            self._collectives.shutdown()
        self._collectives = None

    @property
    def rank(self) -> int:
        return self.collectives.rank

    @property
    def world_size(self) -> int:
        return self.collectives.world_size

    def all_reduce_sum(self, array: np.ndarray, what: str = "an all-reduce") -> None:
        """Sum a contiguous array across ranks in place (in buckets of ``bucket_mb``); ``what`` names the
        operation in a :class:`DistributedError`."""
        self.collectives.all_reduce_sum(array, what)

    def start_all_reduce(self, array: np.ndarray, what: str = "an all-reduce") -> list:
        """Start summing ``array`` across ranks in place (in buckets of ``bucket_mb``); returns the pending
        operations for :meth:`wait`. The array must stay untouched until then."""
        return self.collectives.start_all_reduce(array, what)

    def wait(self, pending: list, what: str) -> None:
        self.collectives.wait(pending, what)

    def broadcast(self, array: np.ndarray, what: str = "a broadcast") -> np.ndarray:
        """Rank 0's ``array`` on every rank (a new contiguous array)."""
        return self.collectives.broadcast(array, what)

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
        self._marked = sync_batchnorm.prepare_fit(model) if self.sync_batchnorm else []

    def end_fit(self, model) -> None:
        """Leave ``model`` as single-process training expects it: BatchNormalization layers this fit marked
        to synchronize their statistics are unmarked (their steps rebuilt on next use), so that training,
        evaluation and the exported training step afterwards are a single replica's."""
        sync_batchnorm.finish_fit(model, getattr(self, "_marked", []))
        self._marked = []

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
        expected = self._global_batch if self._global_batch is not None else n * self.world_size
        share = n / expected
        if self.sync_batchnorm:
            with sync_batchnorm.replica_step(self, step, share):
                result = dict(step.compute_gradients(feeds, targets, sample_weights))
        else:
            result = dict(step.compute_gradients(feeds, targets, sample_weights))
        out = step.outputs
        losses = [out.loss] + [v for _, v in out.output_losses]
        totals = [v for m in out.metrics for v in m[2:]]
        states = _layer_states(step)
        # each rank's share of the global batch is known from its size: weight the gradient and the layers'
        # state by it, so the sums are the global batch's gradient and the state's share-weighted mean
        # (1/world_size for equal shares), and reduce everything at once
        stats = np.concatenate([[float(n)], [float(result[v]) * n for v in losses]]
                               + [np.asarray(result[v], np.float64).reshape(-1) for v in totals]
                               + [np.asarray(var.value, np.float64).reshape(-1) * share for var in states])
        buffer = step.gradient_buffer()
        if buffer.dtype != np.float32:
            raise TypeError("DataParallel averages float32 gradient buffers; this model has gradients of other "
                            "dtypes")
        pending = self.start_all_reduce(stats, "the all-reduce of the logged totals and the layers' state")
        row_sparse.all_reduce_gradients(self, buffer, self._tables(step), pending, scale=share)
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
        for var in states:
            size = int(np.prod(var.shape))
            var.assign(stats[offset:offset + size].reshape(var.shape))
            offset += size
        return result, int(total)

    def _tables(self, step) -> list:
        """The gradient buffer's entries reduced by rows (:mod:`graphc.distribute.row_sparse`), per step."""
        known = self._row_tables.get(id(step))
        if known is None or known[0] is not step:
            known = self._row_tables[id(step)] = (step, row_sparse.tables(step.split().entries)
                                                  if self.row_sparse else [])
        return known[1]

    def __repr__(self) -> str:
        sync = ", sync_batchnorm=True" if self.sync_batchnorm else ""
        return f"DataParallel(backend={self.backend!r}, timeout={self.timeout:g}{sync})"


def _layer_states(step) -> list:
    """The Variables a training step's layers update themselves (BatchNormalization's moving statistics),
    floating-point ones only, in the step's order (the same on every rank)."""
    return [step.params[name] for name in step.layer_updates
            if name in step.params and np.dtype(step.params[name].dtype).kind == "f"]
