"""The runner a compiled model's trainer gets from its backend setting (:mod:`graphc.config`).

``"reference"``: none (the reference interpreter); ``"native"``: a
:class:`~graphc.training.native_step.NativeStepRunner`; ``"auto"``: an :class:`AutoStepRunner`, native
until native code cannot be built (no C compiler, or an op of the step graph without a native kernel,
the gradient of ``GRU(reset_after=False)`` for one), after which every step of the trainer runs on
the reference, with one warning naming the reason. Falling back mid-training loses nothing: the host
Variables pull what an instance holds when the reference reads them.
"""

from __future__ import annotations

import numpy as np

from graphc.backend_select import compiler_missing, native_errors, warn_fallback
from graphc.backends.reference import run as reference_run
from graphc.training.native_step import NativeStepRunner


class AutoStepRunner(NativeStepRunner):
    """Native steps while they can be built, else (for good) the reference interpreter."""

    def __init__(self, trainer, threads: int | None = None, seed: int = 0):
        super().__init__(threads, seed=seed, trainer=trainer)
        self.fallback: str | None = None  # why the steps run on the reference, once they do

    def native(self, step, *, split: bool = False) -> bool:
        """Whether ``step`` runs natively (compiled here on first use); if not, hands it to the reference."""
        if self.fallback is None:
            if split and step.training:
                self.split_step = True
            reason = compiler_missing()
            if reason is None:
                try:
                    self.compiled(step)
                    return True
                except native_errors() as exc:
                    reason = str(exc).strip()
            self.fallback = reason
            warn_fallback(self.trainer.model, "training and evaluation", reason)
        step.runner = reference_run
        return False

    def run_step(self, step, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.native(step):
            return super().run_step(step, feeds)
        return step.run(*_split_targets(step, feeds))

    def gradient_step(self, step, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.native(step, split=True):
            return super().gradient_step(step, feeds)
        return step.compute_gradients(*_split_targets(step, feeds))

    def apply_gradients(self, step) -> None:
        if self.native(step, split=True):
            super().apply_gradients(step)
        else:
            step.apply_gradients()

    def gradient_buffer(self, step) -> np.ndarray:
        if self.native(step, split=True):
            return super().gradient_buffer(step)
        return step.gradient_buffer()


def _split_targets(step, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list]:
    """A runner's feeds (targets and sample weights included) as ``Step.run``'s (feeds, targets)."""
    names = set(step.target_inputs)
    targets = [None if name is None else feeds[name] for name in step.target_inputs]
    return {k: v for k, v in feeds.items() if k not in names}, targets


def step_runner(trainer, backend: str):
    """The runner of ``trainer``'s steps for backend setting ``backend``."""
    if backend == "reference":
        return None
    if backend == "native":
        return NativeStepRunner(trainer=trainer)
    return AutoStepRunner(trainer)


__all__ = ["AutoStepRunner", "step_runner"]
