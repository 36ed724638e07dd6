"""What runs ``Model.predict`` and ``predict_on_batch``: the model's backend setting (:mod:`graphc.config`).

``"reference"`` runs the model's level-0 reference graph. ``"native"`` and ``"auto"`` run a
:class:`NativePredictor`, built once per model: its library binds the batch size and every other
free dimension when it runs, so one build serves every input signature (the runtime keeps a bounded
set of memory plans, one per distinct set of free-dim values). Under ``"auto"``, no C compiler or an op
without a native kernel makes predict run on the reference, with one warning per model and reason.
"""

from __future__ import annotations

import numpy as np

from graphc.backend_select import compiler_missing, model_backend, native_errors, warn_fallback
from graphc.frontend.layer import Variable

PREDICT_LEVEL = 2  # the optimizer level of native predict (BatchNormalization folded, epilogues fused)


def _versions(model) -> tuple:
    return tuple(w.version for w in model.weights)


class NativePredictor:
    """A model's native inference library, kept in step with the model's weights.

    Before each call the Variables' versions are compared with those it was built from (set_weights,
    load_weights, a training step on either backend all move them on; a native trainer's instance
    holds the latest values, read back through ``gc_instance_get_weight``). On a change the model is
    lowered and optimized again — level 2 folds BatchNormalization into convolutions, so one weight
    can change a folded constant — and, the structure being the same, only the constants whose values
    changed are written into the running instance (``gc_instance_set_weight`` repacks them): no
    recompilation, no relinking. ``builds`` and ``refreshes`` count both."""

    def __init__(self, model, level: int = PREDICT_LEVEL, threads: int | None = None):
        self.model = model
        self.level = level
        self.threads = threads
        self.builds = 0
        self.refreshes = 0
        self._build(*self._lowered())

    def _lowered(self):
        from graphc.frontend.to_ir import lower_model
        from graphc.passes import optimize

        self._generation = Variable.generation
        versions = _versions(self.model)
        graph, _ = lower_model(self.model)
        return (optimize(graph, self.level) if self.level else graph), versions

    def _build(self, graph, versions: tuple) -> None:
        from graphc.backends.llvm import build_native
        from graphc.backends.llvm.native import structure_digest

        # no model given: keeping the weights current is this object's job, not the compiled model's
        self.compiled = build_native(graph, level=self.level, threads=self.threads)
        self._digest = structure_digest(graph)
        self._weight_names = {w.name for w in self.compiled.library.weights}
        self._versions = versions
        self.builds += 1

    def refresh(self) -> None:
        """Bring the instance's constants up to the model's current weights, if they changed (one
        comparison while no Variable anywhere changed)."""
        generation = Variable.generation
        if generation == self._generation:
            return
        self._refresh()
        self._generation = generation

    def _refresh(self) -> None:
        if _versions(self.model) == self._versions:
            return
        from graphc.backends.llvm.native import structure_digest

        graph, versions = self._lowered()
        compiled = self.compiled
        if structure_digest(graph) != self._digest or not set(graph.constants) <= self._weight_names:
            self._build(graph, versions)
            return
        with compiled._lock:
            old = compiled.graph.constants
            for name, value in graph.constants.items():
                if not np.array_equal(value, old[name]):
                    compiled.instance.set_weight(name, value)
            compiled.graph = graph
        self._versions = versions
        self.refreshes += 1

    def predict(self, x, batch_size: int | None = None, *, whole: bool = False):
        self.refresh()
        return self.compiled.predict(x, batch_size=batch_size, whole=whole)


def model_predictor(model):
    """The compiled form ``model.predict`` runs (a :class:`NativePredictor` or the reference), built on
    first use and kept in ``model._compiled_cache``."""
    backend = model_backend(model)
    if backend == "reference":
        return model._reference()
    cache = model._compiled_cache
    entry = cache.get("native")
    if isinstance(entry, NativePredictor):
        return entry
    reason = entry if isinstance(entry, str) and backend == "auto" else compiler_missing()
    if reason is None:
        try:
            entry = cache["native"] = NativePredictor(model)
            return entry
        except native_errors() as exc:
            if backend == "native":
                raise
            reason = cache["native"] = str(exc).strip()
    elif backend == "native":
        from graphc.backends.llvm.toolchain import ToolchainError

        raise ToolchainError(f"model {model.name!r} has backend='native', but {reason}")
    warn_fallback(model, "predict", reason)
    return model._reference()


__all__ = ["NativePredictor", "model_predictor", "PREDICT_LEVEL"]
