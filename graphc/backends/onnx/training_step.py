"""A compiled model's whole training step as one plain ONNX graph.

The step graph (:class:`graphc.training.step.Step`: forward in training mode, losses, the
backward ops, the optimizer update, constraints) is exported with its state turned from
constants into graph inputs, so a caller (onnxruntime, any ONNX runtime) carries the state:

- inputs: the model's inputs, one target per output with a loss (``<output>_true``), the sample
  weights when asked for (``<output>_sample_weight``), ``learning_rate`` (float32 scalar; absent when the
  optimizer's learning rate is a schedule, which the graph computes from ``iterations``), then
  every state tensor under its graphc name: the trainable weights (``dense/kernel``), the
  BatchNormalization moving statistics, the optimizer's slots (``adam/dense/kernel/m``...) and
  its ``iterations`` counter (int64 scalar);
- outputs: ``loss`` (the weighted total with the regularization penalties), each output's loss
  (``<output>_loss``, models with several losses), each metric's totals over the batch
  (``<prefix><metric>/total`` and ``/count``; metrics that keep several counts:
  ``/0``, ``/1``...), then the state after the step: input ``w`` comes back as ``w.next``.

Every state input and ``learning_rate`` has an initializer of the same name holding the value at
export time (ONNX lets such an input be fed or left to its default), so the file alone runs a
first step; feed the ``.next`` outputs back as the inputs for the next one. The pairs are also in
the model's metadata (``graphc.state_updates``, JSON).

Random ops (Dropout, GaussianNoise... in training mode) are refused: onnxruntime's random
operators draw from a generator that graphc cannot seed per step, so the exported step would
neither repeat itself nor agree with graphc's reference or native steps. Export a model whose
training-mode randomness is off (rate 0, or the layer left out for the export).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphc.backends.onnx.context import OnnxExportError, where
from graphc.backends.onnx.export import export_graph
from graphc.ir.graph import Graph

RANDOM_OPS = ("random_uniform_like", "random_normal_like")
NEXT = ".next"


@dataclass
class TrainingStepExport:
    """The exported step and how to drive it."""

    model: onnx.ModelProto
    batch_inputs: list[str]  # model inputs, targets, sample weights (fed each step)
    learning_rate: str | None  # the float32 scalar input (None: the step follows its schedule)
    state: dict[str, np.ndarray]  # state input -> its value at export time
    updates: dict[str, str]  # state input -> the output holding its value after the step
    loss: str
    output_losses: list[str] = field(default_factory=list)
    metrics: dict[str, list[str]] = field(default_factory=dict)  # metric name -> its totals' outputs


def _target_arrays(model, trainer, y) -> list[np.ndarray | None]:
    """One array per model output giving each target's dtype and trailing shape."""
    from graphc.training.loop import standardize_y

    if y is not None:
        return standardize_y(model, y)
    for (training, signature, *_), _step in trainer._steps.items():
        if training:
            return [None if s is None else np.zeros((1, *s[1]), dtype=np.int64 if s[0] in "iu" else np.float32)
                    for s in signature]
    trainer.configure()
    targets: list[np.ndarray | None] = []
    for out, loss in zip(model.outputs, trainer.loss_objects):
        shape = tuple(1 if d is None else int(d) for d in out.shape[1:])
        if loss is not None and type(loss).__name__.startswith("Sparse"):
            raise ValueError(f"the {type(loss).__name__} loss takes integer class ids whose shape graphc cannot "
                             "guess: pass one batch of targets, export_training_step(model, path, y=...)")
        targets.append(np.zeros((1, *shape), dtype=np.float32))
    return targets


def _sync_state(step) -> None:
    """The step graph's state constants take the host's current values (as Step.run does)."""
    graph, opt = step.graph, step.optimizer
    for name, var in step.params.items():
        if name in graph.constants:
            graph.constants[name] = np.asarray(var.value)
    for name, (key, slot) in step.slots.items():
        value = opt.slots.get(key, {}).get(slot) if isinstance(opt.slots.get(key), dict) else None
        if value is not None:
            graph.constants[name] = np.asarray(value)
    graph.constants[step.iterations] = np.asarray(opt.iterations, dtype=np.int64)


def refuse_randomness(graph: Graph) -> None:
    for op in graph.ops():
        if op.type in RANDOM_OPS:
            raise OnnxExportError(
                f"{where(op)} draws random numbers in training mode; an exported training step must be "
                "deterministic (onnxruntime's random operators cannot be seeded per step, so the step would "
                "agree neither with itself nor with graphc's steps). Set the layer's rate to 0 or leave it "
                "out of the model you export")


def _public_names(step, graph: Graph, specs) -> tuple[dict[str, str], str, list[str], dict[str, list[str]]]:
    """{value: public output name} for the loss, output losses and metric totals."""
    names: dict[str, str] = {}

    def name(value: str, wanted: str) -> str:
        if value not in names:
            names[value] = wanted if wanted not in graph.values or wanted == value else graph.unique_name(wanted)
        return names[value]

    out = step.outputs
    loss = name(out.loss, "loss")
    losses = [name(v, f"{specs[i].name}_loss") for i, v in out.output_losses]
    metrics: dict[str, list[str]] = {}
    for i, k, *totals in out.metrics:
        metric = f"{specs[i].metric_prefix}{specs[i].metrics[k].name}"
        tags = ["total", "count"] if len(totals) == 2 and not hasattr(specs[i].metrics[k], "emit_totals") \
            else [str(j) for j in range(len(totals))]
        metrics[metric] = [name(v, f"{metric}/{tag}") for v, tag in zip(totals, tags)]
    return names, loss, losses, metrics


def training_step_graph(model, y=None, sample_weight=None) -> tuple[Graph, dict]:
    """The step graph of compiled ``model`` with its state as inputs, and what the export reports."""
    from graphc.training.loop import standardize_sample_weights
    from graphc.training.step import Step

    trainer = getattr(model, "_graphc_trainer", None)
    if trainer is None:
        raise RuntimeError("export_training_step needs a compiled model: call model.compile(optimizer, loss) first")
    targets = _target_arrays(model, trainer, y)
    if trainer.specs is None:
        trainer._build_specs(targets)
    sws = None
    if sample_weight is not None:
        sws = standardize_sample_weights(model, targets, sample_weight)
    step = Step(model, trainer.specs, targets, trainer.optimizer, True, sample_weights=sws)
    _sync_state(step)
    graph = step.graph.copy()
    refuse_randomness(graph)
    updates = dict(graph.meta["state_updates"])
    names, loss, losses, metrics = _public_names(step, graph, trainer.specs)
    for value, public in names.items():
        graph.rename_value(value, public)
    state: dict[str, np.ndarray] = {}
    batch = [n for n in graph.inputs if n != step.lr_input]
    for const in updates:
        value = graph.values[const]
        state[const] = graph.constants.pop(const)
        value.kind = "input"
        graph.inputs.append(const)
    pairs: dict[str, str] = {}
    renamed: dict[str, str] = {}
    for const, out in updates.items():
        out = renamed.get(out, names.get(out, out))
        wanted = graph.unique_name(const + NEXT)
        if graph.values[out].kind == "op" and out not in names.values() and out not in renamed.values():
            graph.rename_value(out, wanted)
            renamed[out] = wanted
        else:  # a reported value, another state's update, or not computed at all: a copy of it
            graph.add_op("identity", [out], [graph.type_of(out)], layer="optimizer", output_names=[wanted])
        pairs[const] = wanted
    reported = list(dict.fromkeys([loss, *losses, *[v for vs in metrics.values() for v in vs]]))
    graph.set_outputs(reported + list(pairs.values()))
    graph.inputs = batch + [v for v in (step.lr_input,) if v is not None] + [c for c in updates]
    lr = None if step.lr_input is None else np.asarray(trainer.optimizer.learning_rate, dtype=np.float32)
    info = {"batch_inputs": batch, "learning_rate": step.lr_input, "learning_rate_value": lr, "state": state,
            "updates": pairs, "loss": loss, "output_losses": losses, "metrics": metrics}
    return graph, info


def export_training_step(model, y=None, sample_weight=None, opset: int | None = None) -> TrainingStepExport:
    """The ONNX training step of compiled ``model`` (see the module docstring)."""
    from graphc.api import verify

    graph, info = training_step_graph(model, y, sample_weight)
    verify(graph)
    proto = export_graph(graph, opset, doc=f"graphc training step of model {graph.name!r}: feed each "
                                          f"'<state>{NEXT}' output back as input '<state>' for the next step")
    defaults = dict(info["state"])
    if info["learning_rate"] is not None:
        defaults[info["learning_rate"]] = info["learning_rate_value"]
    proto.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in defaults.items())
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({"graphc.state_updates": json.dumps(info["updates"]), "graphc.loss": info["loss"]})
    helper.set_model_props(proto, props)
    return TrainingStepExport(proto, info["batch_inputs"], info["learning_rate"], info["state"], info["updates"],
                              info["loss"], info["output_losses"], info["metrics"])
