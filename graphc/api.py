"""The top-level API: ``lower``, ``build``, ``verify`` and ``CompiledModel``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphc.backends.reference.interpreter import InputError, run
from graphc.frontend.layer import Variable
from graphc.frontend.model import Model
from graphc.frontend.to_ir import lower_model
from graphc.ir.graph import Graph
from graphc.ir.verify import verify as _verify_ir
from graphc.memory import plan_memory
from graphc.ops.registry import infer_op
from graphc.passes import optimize

TARGETS = ("reference", "onnx", "native")
PRECISIONS = ("float32", "bf16")  # graphc.backends.llvm.target.PRECISIONS (llvmlite is imported only there)


def lower(model: Model, *, training: bool = False) -> Graph:
    """The IR graph of a Model (inference graph unless ``training``)."""
    graph, _ = lower_model(model, training=training)
    return graph


def verify(graph: Graph) -> None:
    """Check the IR's invariants and every op's shape/dtype rule; raises VerificationError."""
    _verify_ir(graph, infer_op)


class CompiledModel:
    """A model compiled for one target; ``predict`` takes arrays, lists or dicts like Keras."""

    precision = "float32"  # what products run at (native builds may run bf16, see build)

    def __init__(self, graph: Graph, target: str, *, model: Model | None = None, params=None, level: int = 0):
        self.graph = graph
        self.target = target
        self.level = level
        self._model = model
        self._params = params or {}
        self._generation = Variable.generation
        self._versions = self._current_versions()
        self.input_names: list[str] = list(graph.meta.get("input_names", graph.inputs))
        self.output_names: list[str] = list(graph.meta.get("output_names", graph.outputs))
        self._out_kind = graph.meta.get("output_structure", "list" if len(graph.outputs) > 1 else "single")

    def _current_versions(self):
        return {name: var.version for name, var in self._params.items()}

    def _sync_weights(self) -> None:
        """Pick up weights changed on the source model since compilation (level 0 graphs); nothing to
        do, at the cost of one comparison, while no Variable anywhere changed."""
        generation = Variable.generation
        if generation == self._generation:
            return
        self._sync_changed_weights()
        self._generation = generation

    def _sync_changed_weights(self) -> None:
        if self.level and self._model is not None and self._current_versions() != self._versions:
            # Optimized graphs fold weights together: compile again from the model.
            graph, self._params = lower_model(self._model)
            self.graph = optimize(graph, self.level)
            self._versions = self._current_versions()
            self._graph_changed()
            return
        changed = False
        for name, var in self._params.items():
            if self._versions.get(name) != var.version and name in self.graph.constants:
                self.graph.set_constant(name, var.value)
                self._versions[name] = var.version
                changed = True
        if changed:
            self._graph_changed()

    def _graph_changed(self) -> None:
        """Called after the graph picked up new weights; targets holding a compiled form rebuild it."""

    def feeds(self, x) -> dict[str, np.ndarray]:
        """Map user data (array, list/tuple in input order, or dict by input name) to graph inputs."""
        names = self.graph.inputs
        if isinstance(x, Mapping):
            unknown = [k for k in x if k not in names]
            missing = [n for n in names if n not in x]
            if unknown or missing:
                raise InputError(f"input dict keys {sorted(x)} do not match the model inputs {names}"
                                 + (f"; missing {missing}" if missing else "")
                                 + (f"; unknown {unknown}" if unknown else ""))
            return {n: x[n] for n in names}
        if isinstance(x, (list, tuple)) and len(names) > 1:
            if len(x) != len(names):
                raise InputError(f"the model takes {len(names)} inputs {names}, got a list of {len(x)}")
            return dict(zip(names, x))
        if isinstance(x, (list, tuple)) and len(x) == 1 and not np.isscalar(x[0]) and np.ndim(x[0]) >= 1 \
                and len(names) == 1 and isinstance(x[0], np.ndarray):
            return {names[0]: x[0]}
        if len(names) != 1:
            raise InputError(f"the model takes {len(names)} inputs {names}; pass a list or a dict")
        return {names[0]: x}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name."""
        self._sync_weights()
        return run(self.graph, feeds)

    def _pack(self, outs: list[np.ndarray]):
        if self._out_kind == "single" or (self._out_kind == "list" and len(outs) == 1):
            return outs[0]  # Keras unpacks a one-element output list too
        if self._out_kind == "dict":
            return dict(zip(self.output_names, outs))
        return outs

    def predict(self, x, batch_size: int | None = None, *, whole: bool = False):
        feeds = {k: np.asarray(v) for k, v in self.feeds(x).items()}
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in feeds.items()}
        n_values = {s for s in sizes.values() if s is not None}
        if len(n_values) > 1:
            raise InputError(f"inputs have different numbers of samples: {sizes}")
        n = n_values.pop() if n_values else 0
        batch_size = batch_size or 32
        if whole or n <= batch_size:
            result = self.run(feeds)
            return self._pack([result[o] for o in self.graph.outputs])
        chunks: list[list[np.ndarray]] = [[] for _ in self.graph.outputs]
        for start in range(0, n, batch_size):
            part = {k: v[start:start + batch_size] for k, v in feeds.items()}
            result = self.run(part)
            for i, o in enumerate(self.graph.outputs):
                chunks[i].append(result[o])
        return self._pack([np.concatenate(c, axis=0) for c in chunks])

    def __call__(self, x):
        return self.predict(x, whole=True)

    def profile(self, x, runs: int = 10, *, warmup: int = 2, peak=True, trace_events: int | None = None):
        """Per-kernel times of the native code on inputs ``x``, timed inside the running code (same
        kernels and memory plan as ``predict``), named by the model's layers, with FLOPs, bytes and
        the % of this machine's measured peak: a :class:`graphc.bench.native_profile.NativeProfileReport`
        (``print`` it; ``write_trace(path)`` for Chrome/Perfetto). Native target only."""
        from graphc.bench.native_profile import profile_compiled

        return profile_compiled(self, x, runs, warmup=warmup, peak=peak, trace_events=trace_events)

    def memory_plan(self, x=None):
        """The memory plan the native code ran with (a :class:`graphc.memory.runtime_plan.RuntimePlan`).
        Native target only: the other targets run without graphc's arena, and
        ``graphc.plan_memory(cm.graph, batch_size)`` gives the plan of the graph for them."""
        raise ValueError(f"memory_plan() reports the arena of the native code: build the model with "
                         f"target='native' (this one is {self.target!r}); graphc.plan_memory(cm.graph, batch_size) "
                         f"plans the graph")


class OnnxCompiledModel(CompiledModel):
    """A model exported to ONNX and run by onnxruntime (``threads``: intra-op threads)."""

    def __init__(self, graph: Graph, *, threads: int | None = None, **kwargs):
        super().__init__(graph, "onnx", **kwargs)
        self.threads = threads
        self._graph_changed()

    def _graph_changed(self) -> None:
        from graphc.backends.onnx.runtime import OnnxRuntimeGraph

        self._session = OnnxRuntimeGraph(self.graph, threads=self.threads)

    @property
    def onnx_model(self):
        """The exported ``onnx.ModelProto``."""
        return self._session.model

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._sync_weights()
        return self._session.run(feeds)


def _build_trainer(model, target: str, threads: int | None, seed: int = 0):
    """The compiled model's trainer, its step graphs running on ``target`` (native: as libraries whose
    instances hold the training state, their random state seeded with ``seed``)."""
    if not isinstance(model, Model):
        raise TypeError(f"graphc.build(..., training=True) needs a compiled Model, got {type(model).__name__}")
    trainer = getattr(model, "_graphc_trainer", None)
    if trainer is None:
        raise ValueError(f"model {model.name!r} is not compiled: call model.compile(optimizer, loss, ...) before "
                         "graphc.build(..., training=True)")
    if target == "reference":
        trainer.runner = None
    elif target == "native":
        from graphc.training.native_step import NativeStepRunner

        trainer.runner = NativeStepRunner(threads, seed=seed, trainer=trainer)
    else:
        raise ValueError(f"training steps run on the 'reference' and 'native' targets, not {target!r} "
                         "(ONNX export covers inference graphs)")
    trainer._steps.clear()
    return trainer


def build(model, target: str = "reference", level: int = 2, threads: int | None = None,
          training: bool = False, seed: int = 0, precision: str = "float32") -> CompiledModel:
    """Compile ``model`` (a Model or an IR Graph) for ``target``. With ``training``, the compiled
    Model's trainer runs its steps on ``target`` instead (native: the instances hold the training
    state, their dropout and noise drawn from ``seed``).

    ``precision`` (native target only): "float32", or "bf16" — matrix products by weights and
    convolutions on bf16 inputs with float32 accumulation, everything else in float32. On a CPU
    without AVX512-BF16 a ``PrecisionFallbackWarning`` says so and float32 code is built
    (``CompiledModel.precision`` tells which ran)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; available targets: {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision != "float32" and (target != "native" or training):
        raise ValueError(f"precision={precision!r} is a native inference option; the {target!r} target"
                         f"{' (training)' if training else ''} computes in float32")
    if training:
        return _build_trainer(model, target, threads, seed)
    if isinstance(model, Graph):
        graph, params, source = model, {}, None
    elif isinstance(model, Model):
        graph, params = lower_model(model)
        source = model
    else:
        raise TypeError(f"graphc.build expects a Model or a graphc.ir.Graph, got {type(model).__name__}")
    quantized = "quantization" in graph.meta
    verify(graph)
    graph = optimize(graph, level) if level else graph
    if target == "native":
        from graphc.backends.llvm import build_native

        if quantized:  # integer kernels for the quantized products; the rest runs in float
            from graphc.quantization import fold_integer_products

            graph = fold_integer_products(graph)
        return build_native(graph, model=source, params=params, level=level, threads=threads, precision=precision)
    if target == "onnx":
        return OnnxCompiledModel(graph, model=source, params=params, level=level, threads=threads)
    return CompiledModel(graph, target, model=source, params=params, level=level)


__all__ = ["lower", "build", "verify", "optimize", "plan_memory", "CompiledModel"]
