"""The training step and the evaluation step as IR graphs.

``build_step(model, spec, targets, training=True)`` lowers the model in training mode (Dropout
draws masks, BatchNormalization uses batch statistics), adds one input per target
(``<output>_true``, batch-major like the model inputs), the losses (plus the regularization
penalties, :mod:`graphc.training.regularization`) and metrics, and then, for a training step,
the gradient of the total loss (:func:`graphc.autodiff.gradients`), the optimizer's update and
the weights' constraints. Any backend can run the result; the contract is:

- inputs: the model's inputs, the targets and (training) ``learning_rate`` (float32 scalar), unless the
  optimizer's learning rate is one of graphc's schedules: then the step computes it from its iteration
  counter (:meth:`graphc.training.schedules.LearningRateSchedule.emit`) and has no such input;
- constants: the weights and the optimizer's state (slots, ``iterations``);
- outputs: ``loss`` (the weighted total), each output's unweighted loss, each metric's sum and
  count over the batch, and the new value of every state constant;
- ``graph.meta["state_updates"]``: ``{constant: output}``; after a step each such constant takes
  its output's value (weights, BatchNorm moving statistics, optimizer slots, iterations).
- ``graph.meta["train_step"]`` / ``graph.meta["eval_step"]``: the targets and how many leading outputs
  are reported (and a training step's hyperparameters), which native libraries describe in C.

:class:`Step` runs it (on the reference interpreter unless given another ``runner``) and keeps
the host objects (the model's Variables, the optimizer's slots) in sync with those constants.

A training step also runs in two halves (:meth:`Step.split`, what data parallelism needs): the
*gradient step* (forward, losses, backward; it writes every trainable weight's gradient into one flat
gradient buffer and updates the layers' own state, such as BatchNormalization's moving statistics)
and the *apply step* (the optimizer's update, clipping included, and the constraints, reading the
gradients back from that buffer). Both graphs are cut from the fused one, so the two halves compute
exactly what it computes; between them the buffer may be changed (averaged across processes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from graphc.autodiff import gradients
from graphc.autodiff.core import prune
from graphc.backends.reference import run
from graphc.frontend.to_ir import lower_model
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops.builder import OpBuilder
from graphc.training import schedules
from graphc.training.losses import Loss
from graphc.training.masks import sample_weighted, weighted_loss_values, weighted_metric_totals
from graphc.training.metrics import MeanMetricWrapper
from graphc.training.optimizers import Optimizer, ParamUpdate
from graphc.training.regularization import add_losses, apply_constraints, regularization_losses


@dataclass
class OutputSpec:
    """What the compiled model does with one of its outputs."""

    name: str
    loss: Loss | None = None
    weight: float | None = None
    metrics: list[MeanMetricWrapper] = field(default_factory=list)
    metric_prefix: str = ""


@dataclass
class StepOutputs:
    loss: str
    output_losses: list[tuple[int, str]]  # (output index, value)
    metrics: list[tuple]  # (output index, metric index, sum value, count value) or (..., the metric's totals)


def _target_type(array: np.ndarray) -> TensorType:
    if np.issubdtype(array.dtype, np.integer):
        dtype = "int64" if array.dtype == np.int64 else "int32"
    else:
        dtype = "float32"
    return TensorType(dtype, ("batch",) + tuple(int(d) for d in array.shape[1:]))


def target_array(array: np.ndarray, t: TensorType) -> np.ndarray:
    return np.asarray(array).astype(t.dtype, copy=False)


@dataclass
class GradientEntry:
    """One trainable weight's place in the gradient buffer (entries follow the optimizer's order and
    are packed one after the other, each aligned to its dtype's size)."""

    weight: str  # the weight (a constant of the step graphs)
    value: str  # its gradient: a value of the training graph, an output of the gradient graph
    input: str  # the apply graph's input that reads it back
    type: TensorType
    offset: int  # bytes from the start of the buffer
    nbytes: int


@dataclass
class SplitStep:
    """A training step cut in two (see the module's docstring)."""

    gradient: Graph  # inputs as the training graph's but the hyperparameters; outputs: reported, gradients, layer state
    apply: Graph  # inputs: the gradients (buffer order), then the hyperparameters; outputs: the optimizer's updates
    entries: list[GradientEntry]
    nbytes: int  # the gradient buffer's size
    layer_updates: dict[str, str]  # constant -> value of the gradient graph (moving statistics)
    optimizer_updates: dict[str, str]  # constant -> value of the apply graph (weights, slots, iterations)

    @property
    def layout(self) -> list[tuple[str, str, int, int]]:
        """(weight, gradient value, byte offset, bytes) per entry: what a native library is built with."""
        return [(e.weight, e.value, e.offset, e.nbytes) for e in self.entries]


def gradient_views(buffer: np.ndarray, entries: list[GradientEntry]) -> list[np.ndarray]:
    """Each entry's gradient as an array viewing ``buffer`` (any dtype, contiguous, the buffer's bytes)."""
    raw = buffer.reshape(-1).view(np.uint8)
    return [raw[e.offset:e.offset + e.nbytes].view(e.type.dtype).reshape(e.type.shape) for e in entries]


def _split_step(graph: Graph, gradients: list[tuple[str, str]], layer_updates: dict[str, str],
                optimizer_updates: dict[str, str]) -> SplitStep:
    """Cut the training graph into its gradient graph and its apply graph."""
    info = graph.meta["train_step"]
    hyper_inputs = [v for v, _ in info["hyperparameters"].values()]
    entries, offset = [], 0
    for weight, value in gradients:
        t = graph.type_of(value)
        if any(not isinstance(d, int) for d in t.shape):
            raise ValueError(f"the gradient of weight {weight!r} has a free dimension ({t}); a gradient buffer needs "
                             "static shapes")
        item = np.dtype(t.dtype).itemsize
        offset = (offset + item - 1) // item * item
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * item
        entries.append(GradientEntry(weight, value, "", t, offset, nbytes))
        offset += nbytes

    reported = list(graph.outputs[:info["reported"]])
    gradient = graph.copy()
    gradient.meta.pop("output_names", None)
    gradient.set_outputs(list(dict.fromkeys(reported + [e.value for e in entries] + list(layer_updates.values()))))
    gradient.meta["state_updates"] = dict(layer_updates)
    gradient.meta["train_step"] = {"targets": list(info["targets"]), "hyperparameters": {},
                                   "reported": info["reported"]}
    prune(gradient)
    _drop_inputs(gradient, hyper_inputs, "gradient")

    apply = graph.copy()
    apply.meta.pop("output_names", None)
    apply.meta.pop("step_outputs", None)
    for e in entries:
        e.input = apply.add_input(apply.unique_name(f"gradient/{e.weight}"), e.type)
        apply.replace_all_uses(e.value, e.input)
    apply.set_outputs(list(dict.fromkeys(optimizer_updates.values())))
    apply.meta["state_updates"] = dict(optimizer_updates)
    apply.meta["train_step"] = {"targets": [], "hyperparameters": dict(info["hyperparameters"]), "reported": 0}
    prune(apply)
    keep = [e.input for e in entries] + hyper_inputs
    _drop_inputs(apply, [v for v in apply.inputs if v not in keep], "apply")
    apply.inputs = keep
    return SplitStep(gradient, apply, entries, offset, dict(layer_updates), dict(optimizer_updates))


def _drop_inputs(graph: Graph, names: list[str], which: str) -> None:
    """Remove inputs ``names`` of a split step's graph; each must be unused there."""
    for name in names:
        if name not in graph.inputs:
            continue
        if graph.num_uses(name):
            raise ValueError(f"the {which} step would read {name!r}, which belongs to the other half of the training "
                             "step: this optimizer cannot be split into a gradient step and an apply step")
        graph.inputs.remove(name)
        del graph.values[name]


class Step:
    """One compiled step graph (training or evaluation) and the host state it reads and writes."""

    def __init__(self, model, specs: list[OutputSpec], targets: list[np.ndarray | None], optimizer: Optimizer | None,
                 training: bool, runner: Callable[[Graph, dict], dict] | None = None,
                 sample_weights: list[np.ndarray | None] | None = None):
        self.training = training
        self.runner = runner or run  # (graph, feeds) -> {output: array}: the reference interpreter by default
        graph, params = lower_model(model, training=training, losses=True)
        self.graph: Graph = graph
        self.params = params  # constant -> Variable
        b = OpBuilder(graph, layer="loss")
        preds = list(graph.outputs)
        self.target_inputs: list[str | None] = []
        self.target_types: list[TensorType | None] = []
        for spec, y in zip(specs, targets):
            if y is None or (spec.loss is None and not spec.metrics):
                self.target_inputs.append(None)
                self.target_types.append(None)
                continue
            t = _target_type(np.asarray(y))
            self.target_inputs.append(graph.add_input(graph.unique_name(f"{spec.name}_true"), t))
            self.target_types.append(t)
        terms, output_losses = [], []
        output_masks = graph.meta.get("output_masks", {})
        self.weight_inputs: list[str | None] = [None] * len(specs)  # per-output sample weights (weighting losses)
        for i, (spec, pred, target) in enumerate(zip(specs, preds, self.target_inputs)):
            if spec.loss is None or target is None:
                continue
            mask = output_masks.get(pred)  # an output's Keras mask weights its loss and metrics
            sw = sample_weights[i] if sample_weights is not None and i < len(sample_weights) else None
            if mask is None and sw is None:
                value = spec.loss.emit(b, target, pred)
            else:
                values = spec.loss.values(b, target, pred)
                if mask is not None:
                    values = weighted_loss_values(b, values, mask, spec.loss.reduction)
                if sw is not None:
                    self.weight_inputs[i] = graph.add_input(graph.unique_name(f"{spec.name}_sample_weight"),
                                                            _target_type(np.asarray(sw, dtype=np.float32)))
                    values = sample_weighted(b, values, self.weight_inputs[i])
                value = spec.loss.reduce(b, values)
            if graph.type_of(value).dtype != "float32":
                value = b.cast(value, dtype="float32")
            output_losses.append((i, value))
            terms.append(value if spec.weight is None else
                         b.mul(value, b.constant(np.asarray(spec.weight, dtype="float32"), "loss_weight")))
        if not terms:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
        total = terms[0] if len(terms) == 1 else b.add_n(*terms)
        total = add_losses(b, total, regularization_losses(graph, model, params))
        mb = OpBuilder(graph, layer="metrics")
        metrics = []
        for i, (spec, pred, target) in enumerate(zip(specs, preds, self.target_inputs)):
            if target is None:
                continue
            for k, metric in enumerate(spec.metrics):
                if hasattr(metric, "emit_totals"):  # counts the metric accumulates itself (Precision, AUC...)
                    if output_masks.get(pred) is not None:
                        raise ValueError(f"the {type(metric).__name__} metric on a masked output is not supported "
                                         "by graphc")
                    metrics.append((i, k, *metric.emit_totals(mb, target, pred)))
                    continue
                values = metric.values(mb, target, pred)
                if output_masks.get(pred) is not None:
                    s, c = weighted_metric_totals(mb, values, output_masks[pred])
                    metrics.append((i, k, s, c))
                    continue
                rank = graph.type_of(values).rank
                s = mb.reduce_sum(values, axes=tuple(range(rank))) if rank else values
                c = mb.num_elements(values, dtype="float32")
                metrics.append((i, k, mb.cast(s, dtype="float32") if graph.type_of(s).dtype != "float32" else s, c))
        self.outputs = StepOutputs(total, output_losses, metrics)
        self.updates: dict[str, str] = {}
        self.slots: dict[str, tuple[str, str]] = {}
        self.optimizer = optimizer
        self.lr_input: str | None = None  # None when the step computes its learning rate (``schedule``)
        self.schedule: schedules.LearningRateSchedule | None = None
        self.iterations: str | None = None
        self.gradients: list[tuple[str, str]] = []  # (trainable weight, its gradient value), the optimizer's order
        self.layer_updates: dict[str, str] = {}
        self.optimizer_updates: dict[str, str] = {}
        self._split: SplitStep | None = None
        self._gradient_buffer: np.ndarray | None = None
        if training:
            self._add_backward(total, optimizer)
        outs = [total] + [v for _, v in output_losses] + [v for m in metrics for v in m[2:]]
        update_values = list(dict.fromkeys(self.updates.values()))
        graph.set_outputs(list(dict.fromkeys(outs + update_values)))
        graph.meta["state_updates"] = dict(self.updates)
        graph.meta["step_outputs"] = {"loss": total}
        if training:
            hyperparameters = {} if self.lr_input is None else {
                "learning_rate": (self.lr_input, float(np.float32(optimizer.learning_rate)))}
            graph.meta["train_step"] = {"targets": [t for t in self.target_inputs if t is not None],
                                        "hyperparameters": hyperparameters, "reported": len(dict.fromkeys(outs))}
        else:
            graph.meta["eval_step"] = {"targets": [t for t in self.target_inputs if t is not None],
                                       "reported": len(dict.fromkeys(outs))}
        prune(graph)

    def _add_backward(self, total: str, optimizer: Optimizer | None) -> None:
        graph = self.graph
        if optimizer is None:
            raise ValueError("a training step needs an optimizer")
        wrt = [c for c in graph.constants if graph.values[c].trainable and c in self.params]
        grads = gradients(graph, total, wrt)
        updates = [ParamUpdate(c, grads[c], self.params[c].path) for c in wrt if c in grads]
        self.iterations = graph.add_constant(graph.unique_name(f"{optimizer.name}/iterations"),
                                             np.asarray(optimizer._iterations, dtype=np.int64))
        if schedules.in_graph(optimizer._learning_rate):  # the step computes its learning rate itself
            self.schedule = optimizer._learning_rate
            lr = self.schedule.emit(OpBuilder(graph, layer="learning_rate_schedule"), self.iterations)
        else:
            self.lr_input = lr = graph.add_input(graph.unique_name("learning_rate"), TensorType("float32", ()))
        weights = {c: self.params[c].value for c in wrt}
        new, slots = optimizer.emit_updates(OpBuilder(graph, layer="optimizer"), updates, weights, lr,
                                            self.iterations)
        new = apply_constraints(OpBuilder(graph, layer="optimizer"), self.params, new)
        layer_updates = dict(graph.meta.get("state_updates", {}))
        self.gradients = [(u.constant, u.grad) for u in updates]
        self.layer_updates = {c: v for c, v in layer_updates.items() if c not in new}
        self.optimizer_updates = dict(new)
        self.updates = {**layer_updates, **new}
        self.slots = slots

    # ------------------------------------------------------------------ running
    def _target_feeds(self, feeds: dict[str, np.ndarray], targets: list[np.ndarray | None]) -> dict[str, np.ndarray]:
        all_feeds = dict(feeds)
        for name, t, y in zip(self.target_inputs, self.target_types, targets):
            if name is not None:
                all_feeds[name] = target_array(y, t)
        return all_feeds

    def run(self, feeds: dict[str, np.ndarray], targets: list[np.ndarray | None],
            sample_weights: list[np.ndarray | None] | None = None) -> dict[str, np.ndarray]:
        feeds = dict(feeds)
        for name, sw in zip(self.weight_inputs, sample_weights or []):
            if name is not None:
                feeds[name] = np.asarray(sw, dtype=np.float32)
        if hasattr(self.runner, "run_step"):
            # a runner whose instances hold the state (graphc.training.native_step): it moves only
            # what changed on the host in, and leaves the updated state where it is
            return self.runner.run_step(self, self._target_feeds(feeds, targets))
        graph = self.graph
        for name, var in self.params.items():
            if name in graph.constants:
                graph.constants[name] = var.value
        if self.training:
            opt = self.optimizer
            for name, (key, slot) in self.slots.items():
                graph.constants[name] = opt.slots[key][slot]
            graph.constants[self.iterations] = np.asarray(opt._iterations, dtype=np.int64)
        all_feeds = self._target_feeds(feeds, targets)
        if self.training and self.lr_input is not None:
            all_feeds[self.lr_input] = np.asarray(self.optimizer.learning_rate, dtype=np.float32)
        result = self.runner(graph, all_feeds)
        for const, value in self.updates.items():
            array = result[value]
            if const in self.params:
                self.params[const].assign(array)
            elif const in self.slots:
                key, slot = self.slots[const]
                self.optimizer.slots[key][slot] = array
            elif const == self.iterations:
                self.optimizer._iterations = int(array)
            graph.constants[const] = array
        return result

    # ------------------------------------------------------------------ the split step
    def split(self) -> SplitStep:
        """This training step as a gradient step and an apply step (built once)."""
        if not self.training:
            raise ValueError("only a training step has a gradient step and an apply step")
        if self._split is None:
            self._split = _split_step(self.graph, self.gradients, self.layer_updates, self.optimizer_updates)
        return self._split

    def gradient_buffer(self) -> np.ndarray:
        """The flat gradient buffer the gradient step writes and the apply step reads: a 1-D float32 array
        when every gradient is float32 (else its bytes, uint8). Native runners hand out a zero-copy view of
        the instance's own buffer; the reference runner an array of the step's. Overwrite it in place."""
        if hasattr(self.runner, "gradient_buffer"):
            return self.runner.gradient_buffer(self)
        if self._gradient_buffer is None:
            split = self.split()
            float32 = all(e.type.dtype == "float32" for e in split.entries)
            self._gradient_buffer = (np.zeros(split.nbytes // 4, np.float32) if float32
                                     else np.zeros(split.nbytes, np.uint8))
        return self._gradient_buffer

    def _sync_constants(self, graph: Graph) -> None:
        """Host state (weights, slots, iterations) into ``graph``'s constants, for the reference runner."""
        for name, var in self.params.items():
            if name in graph.constants:
                graph.constants[name] = var.value
        opt = self.optimizer
        for name, (key, slot) in self.slots.items():
            if name in graph.constants:
                graph.constants[name] = opt.slots[key][slot]
        if self.iterations in graph.constants:
            graph.constants[self.iterations] = np.asarray(opt._iterations, dtype=np.int64)

    def compute_gradients(self, feeds: dict[str, np.ndarray], targets: list[np.ndarray | None],
                          sample_weights: list[np.ndarray | None] | None = None) -> dict[str, np.ndarray]:
        """The gradient step on one batch: gradients into :meth:`gradient_buffer`, the layers' state updated;
        returns the reported outputs (loss, output losses, metric totals) by value name, as :meth:`run`."""
        feeds = dict(feeds)
        for name, sw in zip(self.weight_inputs, sample_weights or []):
            if name is not None:
                feeds[name] = np.asarray(sw, dtype=np.float32)
        all_feeds = self._target_feeds(feeds, targets)
        if hasattr(self.runner, "gradient_step"):
            return self.runner.gradient_step(self, all_feeds)
        split = self.split()
        graph = split.gradient
        self._sync_constants(graph)
        result = self.runner(graph, {v: all_feeds[v] for v in graph.inputs})
        for view, e in zip(gradient_views(self.gradient_buffer(), split.entries), split.entries):
            view[...] = result[e.value]
        for const, value in split.layer_updates.items():
            if const in self.params:
                self.params[const].assign(result[value])
            graph.constants[const] = result[value]
        return result

    def apply_gradients(self) -> None:
        """The apply step: the optimizer's update from the gradient buffer as it is now."""
        if hasattr(self.runner, "apply_gradients"):
            self.runner.apply_gradients(self)
            return
        split = self.split()
        graph = split.apply
        self._sync_constants(graph)
        feeds = {e.input: view for e, view in zip(split.entries, gradient_views(self.gradient_buffer(),
                                                                                 split.entries))}
        if self.lr_input is not None:
            feeds[self.lr_input] = np.asarray(self.optimizer.learning_rate, dtype=np.float32)
        result = self.runner(graph, feeds)
        opt = self.optimizer
        for const, value in split.optimizer_updates.items():
            array = result[value]
            if const in self.params:
                self.params[const].assign(array)
            elif const in self.slots:
                key, slot = self.slots[const]
                opt.slots[key][slot] = array
            elif const == self.iterations:
                opt._iterations = int(array)
