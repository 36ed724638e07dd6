"""``DataParallel(sync_batchnorm=True)``: BatchNormalization's batch statistics over the global batch.

:func:`prepare_fit` marks every BatchNormalization of the model (``sync_replicas``), so that its
training graphs sum the per-replica sums and counts across the replicas (``cross_replica_sum``) and
normalize with the global batch's mean and variance; the moving statistics then move by the same
amount on every rank. Training steps built before are dropped (their graphs normalize per replica).
:func:`finish_fit` unmarks them when ``fit`` ends, so that later training, evaluation and the exported
training step are a single replica's again.

:func:`replica_step` runs one gradient step as one replica of the data-parallel world: the reference
interpreter sums through the replica context, and a native step's instance gets its collective hook
pointed at it. The context carries the rank's share of the global batch, which weights the cotangents of
the cross-replica sums (see :mod:`graphc.distribute.replica`), so that the gradients DataParallel scales
by the same shares and sums are the gradient of the global batch's loss even when the shares differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from graphc.distribute.replica import attach, replica_context

__all__ = ["batch_normalizations", "finish_fit", "prepare_fit", "replica_step"]


def batch_normalizations(model) -> list:
    """Every BatchNormalization layer of ``model``, nested models and custom layers' sublayers included."""
    from graphc.frontend.layers.normalization import BatchNormalization

    found, seen, todo = [], set(), [model]
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, BatchNormalization):
            found.append(layer)
        todo.extend(reversed(list(getattr(layer, "layers", None) or []) + list(layer._sublayers())))
    return found


def _drop_training_steps(model) -> None:
    trainer = getattr(model, "_graphc_trainer", None)
    if trainer is not None:
        for key in [k for k, step in trainer._steps.items() if step.training]:
            del trainer._steps[key]


def prepare_fit(model) -> list:
    """Mark ``model``'s BatchNormalization layers to reduce their batch statistics across replicas, and drop
    the training steps its trainer built without that; returns the layers marked now."""
    marked = [layer for layer in batch_normalizations(model) if not layer.sync_replicas]
    for layer in marked:
        layer.sync_replicas = True
    if marked:
        _drop_training_steps(model)
    return marked


def finish_fit(model, marked: list) -> None:
    """Unmark the layers :func:`prepare_fit` marked, dropping the training steps built with them."""
    for layer in marked:
        layer.sync_replicas = False
    if marked:
        _drop_training_steps(model)


def _attach_native(step) -> None:
    """Point the collective hook of ``step``'s native instance (when it runs natively) at the replica context."""
    runner = step.runner
    if not hasattr(runner, "gradient_buffer"):
        return  # the reference interpreter reads the context itself
    runner.gradient_buffer(step)  # the library with its split step, built now (or the reference taking over)
    if step.runner is runner and hasattr(runner, "compiled"):
        attach(runner.compiled(step).instance)


@contextmanager
def replica_step(distribution, step, share: float) -> Iterator[None]:
    """Run ``step``'s gradient step inside as one replica of ``distribution`` (a DataParallel), whose share
    of the global batch is ``share``."""
    _attach_native(step)

    def all_reduce_sum(array):
        distribution.all_reduce_sum(array, "the all-reduce of BatchNormalization's batch statistics")

    with replica_context(all_reduce_sum, share):
        yield
