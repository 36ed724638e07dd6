"""Training on the IR: losses, optimizers, metrics, callbacks and the Keras ``fit``/``evaluate`` loop.

A training step is one graph (forward, loss, backward from :mod:`graphc.autodiff`, optimizer
update) that any backend can run; :mod:`graphc.training.step` documents its inputs, outputs and
state updates. This package runs it on the reference interpreter.
"""

from graphc.training.loop import Trainer, compile_model, evaluate, fit, test_on_batch, train_on_batch
from graphc.training.step import Step

__all__ = ["Trainer", "Step", "compile_model", "fit", "evaluate", "train_on_batch", "test_on_batch"]
