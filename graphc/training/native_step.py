"""Training and evaluation steps as native libraries whose state lives in the instance.

A step graph compiles once into a library (:func:`graphc.backends.llvm.native.compile_library`);
its instance holds the weights, optimizer slots, iteration count, BatchNormalization moving
statistics and random state, and ``gc_instance_train_step`` updates them in place. The host
objects (the model's Variables, the optimizer's slot dicts) are not rewritten after a step:
each remembers that an instance holds its latest value (a :class:`Held` record) and reads it
back through ``gc_instance_get_weight`` only when Python asks for it (``get_weights``, ``save``,
a callback, an evaluation step compiled into another library). A value assigned on the host
drops the record, and the next step pushes it through ``gc_instance_set_weight``. Between two
training steps on the same instance no weight byte crosses the ABI. A step moves each updated
Variable's ``version`` on, so compiled copies of the model (a native ``predict``) know to refresh.

A training step's library also holds its evaluation step (the trainer's evaluation step of the same
targets and sample weights): ``evaluate`` and validation run ``gc_instance_eval_step`` on the
training instance's own weights. An evaluation step with no training step yet gets a library of its
own, until a training step of its signature is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from graphc.frontend.layer import Variable
from graphc.training.step_optimizer import optimize_step_graph


@dataclass
class Held:
    """An instance holds the latest value of weight ``name``; ``fresh``: the host copy equals it."""

    instance: object
    name: str
    fresh: bool = False

    def pull(self) -> np.ndarray:
        return self.instance.get_weight(self.name)


class HeldVariable(Variable):
    """A Variable whose value may live in a native instance (set on a model's Variables by class,
    so every holder of the object sees it); reading ``value`` pulls it when the host copy is stale."""

    @property
    def _value(self) -> np.ndarray:
        d = self.__dict__
        held = d.get("_held")
        if held is not None and not held.fresh:
            d["_value"] = np.asarray(held.pull(), dtype=d["_value"].dtype).reshape(d["_value"].shape)
            held.fresh = True
        return d["_value"]

    @_value.setter
    def _value(self, value: np.ndarray) -> None:
        self.__dict__["_value"] = value
        self.__dict__["_held"] = None


@cache
def held_class(cls: type) -> type:
    """``cls`` (Variable or a subclass of it) whose value may be held by an instance."""
    if cls is Variable:
        return HeldVariable
    return type(f"Held{cls.__name__}", (HeldVariable, cls), {"__module__": cls.__module__})


class HeldSlots(dict):
    """One weight's optimizer slots, each possibly held by a native instance (pulled when read)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held: dict[str, Held] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        held = self.held.get(key)
        if held is not None and not held.fresh:
            old = super().__getitem__(key)
            super().__setitem__(key, np.asarray(held.pull(), dtype=old.dtype).reshape(old.shape))
            held.fresh = True
        return super().__getitem__(key)

    def __setitem__(self, key: str, value) -> None:
        self.held.pop(key, None)
        super().__setitem__(key, value)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]


@dataclass
class _Compiled:
    """One step graph's library and instance, and what the instance holds."""

    library: object
    instance: object
    outputs: list[str]
    dtypes: dict[str, np.dtype]  # what each graph input is fed as
    model_inputs: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    iterations: int | None = None
    learning_rate: float | None = None
    gradients: np.ndarray | None = None  # the split step's gradient buffer (a view of the instance's)
    eval_step: object = None  # a training library's evaluation step (the Step whose graph it holds)
    evaluation: _Compiled | None = None  # that step's entry: same library and instance, run by eval_step
    runs_eval_step: bool = False  # this entry is a training library's evaluation step
    graph: object = None  # the graph compiled as the library's run function (its ops are the profile's op numbers)


class NativeStepRunner:
    """Runs a trainer's step graphs as native libraries (``graphc.build(model, "native", training=True)``).

    ``seed`` seeds every instance's random state (``gc_options_t.seed``): a new runner with the
    same seed draws the same dropout masks. With ``split_step`` a training step's library also holds
    its split step (``gc_instance_gradient_step`` / ``gc_instance_apply_gradients``), which
    :meth:`~graphc.training.step.Step.compute_gradients` and ``apply_gradients`` run. ``optimize=False``
    compiles the step graphs as they are built (no optimizer pass)."""

    def __init__(self, threads: int | None = None, seed: int = 0, split_step: bool = False, trainer=None,
                 optimize: bool = True):
        self.threads = threads
        self.seed = seed
        self.split_step = split_step
        self.optimize = optimize  # step graphs go through the optimizer (graphc.training.step_optimizer)
        self.trainer = trainer  # whose steps pair up (training and evaluation) in one library
        self._compiled: dict[int, tuple[object, _Compiled]] = {}

    def compiled(self, step) -> _Compiled:
        """The library and instance of ``step`` (compiled on first use)."""
        if not step.training:
            linked = self._linked_evaluation(step)
            if linked is not None:
                return linked
        entry = self._compiled.get(id(step))
        split = self.split_step and step.training
        if entry is not None and entry[0] is step and split and not entry[1].library.has_gradient_step:
            entry = None  # compiled before the split step was asked for
        if entry is None or entry[0] is not step:
            from graphc.backends.llvm.native import compile_library
            from graphc.runtime import Library

            graph = step.graph
            evaluation = self._evaluation_twin(step) if step.training else None
            eval_graph = None
            if evaluation is not None:
                graph, eval_graph = linked_step_graphs(step, evaluation, optimize=self.optimize)
            elif self.optimize:
                graph = optimize_step_graph(graph, keep=step.params)[0]
            files = compile_library(graph, eval_graph=eval_graph,
                                    split=split_graphs(step, graph, self.optimize) if split else None)
            library = Library(files.shared, files.symbol)
            info = graph.meta.get("train_step")
            compiled = _Compiled(library, library.instance(self.threads, seed=self.seed), list(graph.outputs),
                                 {v: info.dtype for v, info in zip(graph.inputs, library.inputs)}, graph=graph)
            if info and library.has_train_step:
                special = set(info["targets"]) | {v for v, _ in info["hyperparameters"].values()}
                compiled.model_inputs = [v for v in graph.inputs if v not in special]
                compiled.targets = list(info["targets"])
                compiled.outputs = list(graph.outputs[:info["reported"]])
                compiled.eval_step = evaluation if library.has_eval_step else None
            entry = (step, compiled)
            self._compiled[id(step)] = entry
        return entry[1]

    def _step_key(self, step) -> tuple | None:
        """``step``'s key among its trainer's steps (``(training, targets, trainable flags, sample weights)``)."""
        steps = getattr(self.trainer, "_steps", None) or {}
        return next((key for key, s in steps.items() if s is step), None)

    def _evaluation_twin(self, step):
        """The trainer's evaluation step of ``step``'s signature (made when missing: its graph is cheap)
        when it can share ``step``'s library, else None."""
        key = self._step_key(step)
        if key is None:
            return None
        from graphc.training.step import Step

        trainer = self.trainer
        twin_key = (False,) + tuple(key[1:])
        evaluation = trainer._steps.get(twin_key)
        if evaluation is None:
            targets = [None if t is None else np.zeros((1,) + tuple(t.shape[1:]), dtype=t.dtype)
                       for t in step.target_types]
            weights = [None if w is None else np.zeros((1,) + tuple(step.graph.type_of(w).shape[1:]), np.float32)
                       for w in step.weight_inputs]
            evaluation = Step(trainer.model, trainer.specs, targets, None, False, runner=self,
                              sample_weights=weights if any(w is not None for w in weights) else None)
            trainer._steps[twin_key] = evaluation
        return evaluation if _shares_weights(step, evaluation) else None

    def _linked_evaluation(self, step) -> _Compiled | None:
        """The entry running evaluation step ``step`` in its training step's library, if it has one."""
        key = self._step_key(step)
        train = self.trainer._steps.get((True,) + tuple(key[1:])) if key is not None else None
        if train is None:
            return None
        c = self.compiled(train)
        if c.eval_step is not step:
            return None
        if c.evaluation is None:
            graph, info = step.graph, step.graph.meta["eval_step"]
            c.evaluation = _Compiled(c.library, c.instance, list(graph.outputs[:info["reported"]]),
                                     {v: np.dtype(graph.type_of(v).dtype) for v in graph.inputs},
                                     [v for v in graph.inputs if v not in set(info["targets"])],
                                     list(info["targets"]), runs_eval_step=True)
        self._compiled.pop(id(step), None)  # a library of its own, if it had one, is done with
        return c.evaluation

    def run_step(self, step, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step: host values the instance lacks go in, the step runs, the host learns that the
        instance now holds every updated value. Returns the reported outputs by value name."""
        c = self.compiled(step)
        inst = c.instance
        self._push_state(step, c)
        arrays = {v: np.ascontiguousarray(feeds[v], dtype=c.dtypes[v]) for v in step.graph.inputs if v in feeds}
        if c.runs_eval_step:
            outs = inst.eval_step([arrays[v] for v in c.model_inputs], [arrays[v] for v in c.targets])
            return dict(zip(c.outputs, outs))
        if not c.library.has_train_step:
            outs = inst.run([arrays[v] for v in step.graph.inputs])
            return dict(zip(step.graph.outputs, outs))
        self._push_learning_rate(step, c)
        outs = inst.train_step([arrays[v] for v in c.model_inputs], [arrays[v] for v in c.targets])
        self._mark_held(step, c)
        return dict(zip(c.outputs, outs))

    def gradient_step(self, step, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The gradient half of a training step (``gc_instance_gradient_step``); returns the reported outputs."""
        c = self._split_compiled(step)
        self._push_state(step, c)
        arrays = {v: np.ascontiguousarray(feeds[v], dtype=c.dtypes[v]) for v in step.graph.inputs if v in feeds}
        outs = c.instance.gradient_step([arrays[v] for v in c.model_inputs], [arrays[v] for v in c.targets])
        for name in step.layer_updates:
            if name in step.params:
                _hold(step.params[name], c.instance, name)
        return dict(zip(c.outputs, outs))

    def apply_gradients(self, step) -> None:
        """The apply half (``gc_instance_apply_gradients``) from the instance's gradient buffer."""
        c = self._split_compiled(step)
        self._push_state(step, c)
        self._push_learning_rate(step, c)
        c.instance.apply_gradients()
        self._mark_held(step, c)

    @staticmethod
    def _push_learning_rate(step, c: _Compiled) -> None:
        """The host's learning rate into the instance when it changed; a step that computes its learning rate
        from a schedule (no ``learning_rate`` input) needs none."""
        if step.lr_input is None:
            return
        lr = float(np.float32(step.optimizer.learning_rate))
        if lr != c.learning_rate:
            c.instance.set_hyperparameter("learning_rate", lr)
            c.learning_rate = lr

    def gradient_buffer(self, step) -> np.ndarray:
        """A zero-copy view of the instance's gradient buffer (``gc_instance_gradient_buffer``)."""
        c = self._split_compiled(step)
        if c.gradients is None:
            c.gradients = c.instance.gradient_buffer()
        return c.gradients

    def _split_compiled(self, step) -> _Compiled:
        if not step.training:
            raise ValueError("only a training step has a gradient step and an apply step")
        self.split_step = True
        return self.compiled(step)

    def _push_state(self, step, c: _Compiled) -> None:
        graph, inst = step.graph, c.instance
        for name, var in step.params.items():
            if name not in graph.constants:
                continue
            if not isinstance(var, HeldVariable):
                var.__class__ = held_class(type(var))
            held = var.__dict__.get("_held")
            if held is None or held.instance is not inst or held.name != name:
                inst.set_weight(name, var.value)
                var.__dict__["_held"] = Held(inst, name, fresh=True)
        if not step.training:
            return
        opt = step.optimizer
        for name, (key, slot) in step.slots.items():
            per = opt.slots[key]
            if not isinstance(per, HeldSlots):
                per = opt.slots[key] = HeldSlots(per)
            held = per.held.get(slot)
            if held is None or held.instance is not inst or held.name != name:
                inst.set_weight(name, per[slot])
                per.held[slot] = Held(inst, name, fresh=True)
        if c.iterations != opt._iterations:
            inst.set_weight(step.iterations, np.asarray(opt._iterations, dtype=np.int64))
            c.iterations = opt._iterations

    def _mark_held(self, step, c: _Compiled) -> None:
        """After a step the instance holds every updated value; the host copies are stale."""
        opt = step.optimizer
        for name in step.updates:
            if name in step.params:
                _hold(step.params[name], c.instance, name)
            elif name in step.slots:
                key, slot = step.slots[name]
                opt.slots[key].held[slot] = Held(c.instance, name)
        opt._iterations += 1
        c.iterations = opt._iterations


def _hold(var: Variable, instance, name: str) -> None:
    """``instance`` now holds the latest value of ``var`` (its constant ``name``): the host copy is stale,
    and the version moves on as an assignment's would."""
    var.__dict__["_held"] = Held(instance, name)
    var.version += 1


def _shares_weights(train, evaluation) -> bool:
    """Whether every model weight the evaluation step reads is the training step's, by name and type,
    so that one library's evaluation step can read the training instance's weights."""
    return all(train.params.get(name) is var and name in train.graph.constants
               and train.graph.type_of(name) == evaluation.graph.type_of(name)
               for name, var in evaluation.params.items() if name in evaluation.graph.constants)


def _target_like(model, index: int, loss) -> np.ndarray:
    """A one-sample target for output ``index``: what fixes the step's target input types (sparse
    losses take integer class ids without the class axis)."""
    shape = tuple(1 if d is None else int(d) for d in model.outputs[index].shape[1:])
    if "sparse" in type(loss).__name__.lower():
        return np.zeros((1,) + shape[:-1], dtype=np.int32)
    return np.zeros((1,) + shape, dtype=np.float32)


def linked_step_graphs(train, evaluation, optimize: bool = True) -> tuple:
    """The graphs of a training step and of its evaluation step (:class:`~graphc.training.step.Step`
    objects) made fit for one library, where the evaluation step reads the training step's weights
    blob: the evaluation graph's constants that hold the model's variables keep their names (the
    training graph has them); its other constants (loss weights, literals) are renamed apart and
    added to a copy of the training graph, unused there. With ``optimize`` both graphs first go
    through the step optimizer. Returns (training graph, evaluation graph)."""
    if optimize:
        graph = optimize_step_graph(train.graph, keep=train.params)[0]
        eval_graph = optimize_step_graph(evaluation.graph, keep=evaluation.params)[0]
    else:
        graph, eval_graph = train.graph.copy(), evaluation.graph.copy()
    for name in list(eval_graph.constants):
        var = evaluation.params.get(name)
        if var is not None and train.params.get(name) is var and graph.type_of(name) == eval_graph.type_of(name):
            continue
        fresh = name
        while fresh in graph.values or fresh in eval_graph.values:
            fresh = f"eval/{fresh}"
        eval_graph.rename_value(name, fresh)
        graph.add_constant(fresh, eval_graph.constants[fresh], trainable=False)
    return graph, eval_graph


def split_graphs(step, graph, optimize: bool = True) -> tuple:
    """A training step's split step as ``compile_library`` takes it (gradient graph, apply graph, the
    gradient buffer's layout) for the library of training graph ``graph`` (``step.graph`` or its
    optimized copy). With ``optimize`` both halves go through the step optimizer without constant
    folding, and every constant they read that ``graph`` lost to its own optimization is added back to
    ``graph`` (unused there), since linked graphs read the training graph's weights blob."""
    halves = step.split()
    gradient, apply = halves.gradient, halves.apply
    if optimize:
        gradient = optimize_step_graph(gradient, keep=step.params, fold_constants=False)[0]
        apply = optimize_step_graph(apply, keep=step.params, fold_constants=False)[0]
        for half in (gradient, apply):
            for name, array in half.constants.items():
                if name not in graph.constants:
                    graph.add_constant(name, array, trainable=half.values[name].trainable)
    return gradient, apply, halves.layout


def train_step_library(model, *, name: str | None = None, weights: str = "embedded", cpu: str | None = None,
                       split_step: bool = False, optimize: bool = True):
    """Compile a compiled Model's training step (forward, loss, metrics, gradients, optimizer update) and
    its evaluation step (forward in inference mode, loss, metrics) into a model library whose instances
    train it through ``gc_instance_train_step`` and evaluate it through ``gc_instance_eval_step``;
    returns its :class:`~graphc.backends.llvm.native.LibraryFiles`. The library starts from the
    model's current weights and optimizer state and from the optimizer's current learning rate, or computes
    the learning rate of each step from the iteration counter when the optimizer has a schedule (the
    library then has no ``learning_rate`` hyperparameter). With
    ``split_step`` it also holds the split step (``gc_instance_gradient_step``, ``gc_instance_apply_gradients``,
    ``gc_instance_gradient_buffer``). ``optimize=False`` leaves the step graphs as built (no optimizer pass)."""
    from graphc.backends.llvm.native import compile_library
    from graphc.training.loop import standardize_x

    trainer = getattr(model, "_graphc_trainer", None)
    if trainer is None:
        raise ValueError(f"model {model.name!r} is not compiled: call model.compile(optimizer, loss, ...) before "
                         "exporting its training step")
    targets = [_target_like(model, i, loss) for i, loss in enumerate(trainer.loss_objects)]
    feeds = standardize_x(model, [np.zeros((1,) + tuple(1 if d is None else int(d) for d in t.shape[1:]),
                                           dtype=t.dtype) for t in model.inputs])
    train = trainer._step(feeds, targets, True)
    graph, eval_graph = linked_step_graphs(train, trainer._step(feeds, targets, False), optimize)
    split = split_graphs(train, graph, optimize) if split_step else None
    return compile_library(graph, name, weights=weights, cpu=cpu, eval_graph=eval_graph, split=split)


__all__ = ["NativeStepRunner", "HeldVariable", "HeldSlots", "Held", "train_step_library", "linked_step_graphs",
           "split_graphs"]
