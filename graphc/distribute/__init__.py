"""Training one compiled model on several processes.

:class:`DataParallel` plugs graphc's split training step (a gradient step and an apply step around one
flat gradient buffer, :mod:`graphc.training.step`) into an existing collective engine
(:mod:`graphc.distribute.collectives`): torch.distributed's gloo backend over TCP, launched by
``torchrun``, or MPI through mpi4py, launched by ``mpirun``. Pass it to ``fit``::

    model.fit(x, y, batch_size=32, epochs=3, distribution=graphc.distribute.DataParallel())

and start one process per replica with ``torchrun --nproc-per-node 2 train.py`` (or, with
``DataParallel(backend="mpi")``, ``mpirun -n 2 python train.py``).
"""

from graphc.distribute.collectives import DistributedError
from graphc.distribute.data_parallel import DataParallel

__all__ = ["DataParallel", "DistributedError"]
