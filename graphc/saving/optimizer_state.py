"""A graphc optimizer's state in Keras's layout: the datasets of ``optimizer/vars``.

Keras stores an optimizer's variables as ``optimizer/vars/<i>``: the iteration count (batches
seen), the learning rate, the gradient accumulators (with ``gradient_accumulation_steps``), then
the slot variables. Slots are created by ``add_optimizer_variables``
calls; the names passed to one call are interleaved weight by weight (Adam's ``momentum``
and ``velocity``), separate calls follow one another (RMSprop's ``velocity``, then
``momentum``), and each call walks the model's trainable weights in order. graphc's
optimizers (``graphc.training.optimizers``) keep the same slots keyed by weight path, so
the state maps both ways; an optimizer graphc does not know is not mapped (its file state
is then carried through unchanged).
"""

from __future__ import annotations

import numpy as np

from graphc.frontend.model import Model


def _optimizer(model: Model):
    from graphc.training.optimizers import Optimizer

    opt = getattr(model, "optimizer", None)
    return opt if isinstance(opt, Optimizer) else None


def slot_groups(opt) -> list[tuple[str, ...]] | None:
    """The slot names of each of Keras's ``add_optimizer_variables`` calls for ``opt``."""
    name = type(opt).__name__
    if name == "SGD":
        return [("momentum",)] if opt.momentum != 0 else []
    if name == "RMSprop":
        return [("velocity",)] + ([("momentum",)] if opt.momentum > 0 else []) + \
            ([("average_gradient",)] if opt.centered else [])
    if name in ("Adam", "AdamW"):
        return [("momentum", "velocity")] + ([("velocity_hat",)] if opt.amsgrad else [])
    return None


def _layout(model: Model, opt) -> list[tuple] | None:
    groups = slot_groups(opt)
    if groups is None:
        return None
    if opt.gradient_accumulation_steps:  # Keras's base optimizer makes them first, one per weight
        groups = [("gradient_accumulator",)] + groups
    return [(weight, slot) for group in groups for weight in model.trainable_weights for slot in group]


def keras_variables(model: Model) -> tuple[str, list[np.ndarray]] | None:
    """(optimizer name, ``optimizer/vars`` arrays) of the model's graphc optimizer; None if it has none."""
    opt = _optimizer(model)
    if opt is None:
        return None
    layout = _layout(model, opt)
    if layout is None:
        return None
    arrays = [np.asarray(opt._iterations, dtype=np.int64), np.asarray(opt.learning_rate, dtype=np.float32)]
    for weight, slot in layout:
        value = opt.slots.get(weight.path, {}).get(slot)
        arrays.append(np.zeros_like(weight.value) if value is None else np.asarray(value))
    return opt.name, arrays


def restore(model: Model, stored: dict[str, np.ndarray], where: str) -> str | None:
    """Set the model's graphc optimizer from ``optimizer/vars`` datasets (keyed "0", "1"...).

    Returns None on success, else why the state was not taken (the caller warns and keeps the
    datasets as they are). Nothing is changed unless every array fits.
    """
    opt = _optimizer(model)
    if opt is None:
        return "the model has no graphc optimizer"
    layout = _layout(model, opt)
    if layout is None:
        return f"graphc does not know the variable layout of {type(opt).__name__}"
    keys = sorted(stored, key=lambda k: int(k) if k.isdigit() else -1)
    if keys == ["0", "1"]:  # an optimizer that never stepped (no slots yet), as Keras saves one
        layout = []
    elif keys != [str(i) for i in range(2 + len(layout))]:
        return (f"{type(opt).__name__} over this model has {2 + len(layout)} variables, the file holds "
                f"{len(stored)}")
    for i, (weight, slot) in enumerate(layout, start=2):
        if tuple(stored[str(i)].shape) != weight.shape:
            return (f"optimizer variable {i} ({slot} of {weight.path}) has shape {tuple(stored[str(i)].shape)} "
                    f"in {where}, expected {weight.shape}")
    opt._iterations = int(np.asarray(stored["0"]))
    if not callable(opt._learning_rate):
        opt.learning_rate = float(np.asarray(stored["1"]))
    for i, (weight, slot) in enumerate(layout, start=2):
        opt.slots.setdefault(weight.path, {})[slot] = np.array(stored[str(i)], dtype=weight.value.dtype)
    return None


__all__ = ["slot_groups", "keras_variables", "restore"]
