"""Functional models: a graph of layer calls from input tensors to output tensors.

``Model(inputs, outputs)`` walks the call history back from ``outputs`` (Keras's
``map_graph``): it orders the nodes by depth, refuses graphs whose outputs need an input
that was not given ("Graph disconnected"), and refuses duplicate layer names. A Model is
itself a Layer, so it can be called on new tensors; its weights are then shared.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from graphc.frontend import nest, state
from graphc.frontend.input_layer import InputLayer
from graphc.frontend.layer import Layer, _has_mask, lower_takes
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor, Node


def _build_map(outputs: list[KerasTensor], inputs: list[KerasTensor]):
    """DFS from the outputs: nodes in post-order and each layer's first-visit index."""
    finished: set[int] = set()
    in_progress: set[int] = set()
    ordered: list[Node] = []
    layer_indices: dict[int, int] = {}
    input_ids = {id(t) for t in inputs}

    def visit(tensor: KerasTensor) -> None:
        if tensor._keras_history is None:
            raise ValueError(f"{tensor!r} was not produced by a layer call; model inputs must come "
                             "from Input(...)")
        layer, node_index, _ = tensor._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in finished:
            return
        if not node.is_input and id(tensor) in input_ids:
            finished.add(id(node))
            return
        if id(node) in in_progress:
            raise ValueError(f"tensor {tensor.name} from layer {layer.name!r} is part of a cycle")
        layer_indices.setdefault(id(layer), len(layer_indices))
        in_progress.add(id(node))
        for t in node.input_tensors:
            visit(t)
        finished.add(id(node))
        in_progress.discard(id(node))
        ordered.append(node)

    for t in outputs:
        visit(t)
    return ordered, layer_indices


def map_graph(inputs: list[KerasTensor], outputs: list[KerasTensor]):
    """(nodes in execution order, layers in Keras's order) for a functional graph."""
    ordered, layer_indices = _build_map(outputs, inputs)
    in_graph = {id(n) for n in ordered}
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    nodes_by_id = {id(n): n for n in ordered}
    layers_by_id: dict[int, Layer] = {}
    for node in reversed(ordered):
        depth = node_depth.setdefault(id(node), 0)
        depth = max(depth, layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = depth
        layers_by_id[id(node.layer)] = node.layer
        node_depth[id(node)] = depth
        for parent in node.parent_nodes:
            if id(parent) in in_graph:
                node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for t in inputs:
        layer, node_index, _ = t._keras_history
        if id(layer) not in layer_depth:
            node = layer._inbound_nodes[node_index]
            layer_depth[id(layer)] = 0
            layer_indices[id(layer)] = -1
            layers_by_id[id(layer)] = layer
            node_depth[id(node)] = 0
            nodes_by_id[id(node)] = node

    by_depth: dict[int, list[Node]] = collections.defaultdict(list)
    for nid, depth in node_depth.items():
        by_depth[depth].append(nodes_by_id[nid])
    layers_at: dict[int, list[Layer]] = collections.defaultdict(list)
    for lid, depth in layer_depth.items():
        layers_at[depth].append(layers_by_id[lid])
    layers: list[Layer] = []
    for depth in sorted(layers_at, reverse=True):
        layers.extend(sorted(layers_at[depth], key=lambda lay: layer_indices[id(lay)]))

    computable = {id(t) for t in inputs}
    done_names: list[str] = []
    nodes: list[Node] = []
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            for t in node.input_tensors:
                if id(t) not in computable:
                    missing = _source_inputs(t)
                    raise ValueError(
                        f"Graph disconnected: cannot obtain value for tensor {t.name} {t.shape} "
                        f"at layer {node.layer.name!r}: it depends on input(s) "
                        f"{[lay.name for lay in missing]} that are not among the model's inputs "
                        f"{[i._keras_history[0].name for i in inputs]}. The following previous layers "
                        f"were accessed without issue: {done_names}")
            if node.is_input and not any(id(t) in computable for t in node.output_tensors):
                t = node.output_tensors[0]
                consumers = [n.layer.name for n in by_depth[depth - 1] if any(
                    i is t for i in n.input_tensors)] if depth - 1 in by_depth else []
                raise ValueError(
                    f"Graph disconnected: cannot obtain value for tensor {t.name} {t.shape} at layer "
                    f"{(consumers or [node.layer.name])[0]!r}: it comes from input {node.layer.name!r}, "
                    f"which is not among the model's inputs "
                    f"{[i._keras_history[0].name for i in inputs]}. The following previous layers were "
                    f"accessed without issue: {done_names}")
            done_names.append(node.layer.name)
            nodes.append(node)
            for t in node.output_tensors:
                computable.add(id(t))
    for t in outputs:
        if id(t) not in computable:
            missing = _source_inputs(t)
            raise ValueError(f"Graph disconnected: output {t.name} needs input(s) "
                             f"{[lay.name for lay in missing]} that are not among the model's inputs")
    names = [lay.name for lay in layers]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f'The name "{name}" is used {names.count(name)} times in the model. '
                             "All layer names should be unique.")
    return nodes, layers


def _source_inputs(tensor: KerasTensor) -> list[InputLayer]:
    found: list[InputLayer] = []
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        layer, node_index, _ = t._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.is_input:
            if layer not in found:
                found.append(layer)
        stack.extend(node.input_tensors)
    return found


def _check_structure(structure: Any, what: str) -> None:
    for t in nest.flatten(structure):
        if not isinstance(t, KerasTensor):
            raise TypeError(f"all model {what} must be symbolic tensors (from Input or a layer call), "
                            f"got {type(t).__name__}: {t!r}")


class Model(Layer):
    """A functional model: ``Model(inputs, outputs, name=None)``."""

    def __init__(self, inputs=None, outputs=None, name: str | None = None, trainable: bool = True, **kwargs):
        if inputs is None or outputs is None:
            if type(self) is Model:
                raise ValueError("Model(inputs, outputs) needs both inputs and outputs; subclassed "
                                 "models with a call() method are not supported by graphc")
            super().__init__(name=name or state.unique_name(state.to_snake_case(type(self).__name__)),
                             trainable=trainable, **kwargs)
            self._init_empty()
            return
        super().__init__(name=name or state.unique_name("functional"), trainable=trainable, **kwargs)
        self._init_graph(inputs, outputs)

    def _init_empty(self) -> None:
        self._inputs_struct = None
        self._outputs_struct = None
        self._nodes: list[Node] = []
        self._layers: list[Layer] = []
        self.compiled = False
        self._compile_config = None
        self._graphc_backend: str | None = None  # compile(backend=...); None: the process default
        self._compiled_cache: dict = {}

    def _init_graph(self, inputs, outputs) -> None:
        self._init_empty()
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(outputs, tuple):
            outputs = list(outputs)
        _check_structure(inputs, "inputs")
        _check_structure(outputs, "outputs")
        flat_in = nest.flatten(inputs)
        flat_out = nest.flatten(outputs)
        for t in flat_in:
            layer, node_index, _ = t._keras_history
            if not isinstance(layer, InputLayer):
                raise ValueError(f"model inputs must be Input tensors; {t.name} comes from layer "
                                 f"{layer.name!r} ({type(layer).__name__})")
        if len({id(t) for t in flat_in}) != len(flat_in):
            raise ValueError("the same Input tensor is listed twice among the model inputs")
        self._nodes, self._layers = map_graph(flat_in, flat_out)
        self._inputs_struct = inputs
        self._outputs_struct = outputs
        self.built = True

    # ------------------------------------------------------------------ structure
    def _sublayers(self) -> list[Layer]:
        return self._layers

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    @property
    def inputs(self) -> list[KerasTensor]:
        return nest.flatten(self._inputs_struct)

    @property
    def outputs(self) -> list[KerasTensor]:
        return nest.flatten(self._outputs_struct)

    @property
    def input(self):
        return self._inputs_struct

    @property
    def output(self):
        return self._outputs_struct

    @property
    def input_names(self) -> list[str]:
        return [t._keras_history[0].name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        if isinstance(self._outputs_struct, dict):
            return list(self._outputs_struct)
        names: list[str] = []
        for t in self.outputs:
            base = t._keras_history[0].name
            name, k = base, 1
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.append(name)
        return names

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        layers = self.layers  # a Sequential's leave out its InputLayer, as in Keras
        if index is not None:
            if not 0 <= index < len(layers):
                raise ValueError(f"model {self.name!r} has {len(layers)} layers; asked for index {index}")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no such layer: {name!r}; existing layers are "
                         f"{[lay.name for lay in layers]}")

    def count_params(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None) -> None:
        from graphc.frontend.summary import print_summary

        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn,
                      expand_nested=expand_nested, show_trainable=show_trainable, layer_range=layer_range)

    # ------------------------------------------------------------------ lowering
    def lower(self, ctx: LowerContext, inputs, mask=None, training=None, **kwargs):
        """Inline this model's layer calls, with its inputs bound to ``inputs`` (value names)."""
        return self._lower_graph(ctx, inputs, mask)[0]

    def _lower_call(self, ctx: LowerContext, inputs, kwargs: dict, masks=None, kwarg_masks=None):
        """One pass over the graph gives the outputs and their masks (Keras's Functional
        propagates the masks of its inputs, or the ``mask`` its call gives, through its layers)."""
        mask = kwargs.get("mask")
        return self._lower_graph(ctx, inputs, masks if mask is None else mask)

    def _lower_graph(self, ctx: LowerContext, inputs, mask=None):
        flat_given = nest.flatten(inputs)
        if isinstance(self._inputs_struct, dict) and isinstance(inputs, dict):
            flat_given = [inputs[k] for k in self._inputs_struct]
        if len(flat_given) != len(self.inputs):
            raise ValueError(f"model {self.name!r} takes {len(self.inputs)} input(s), got {len(flat_given)}")
        env: dict[int, Any] = {id(t): v for t, v in zip(self.inputs, flat_given)}
        # Keras has two views of a tensor's mask. The one a layer call records while the model is
        # built (a call whose one tensor argument has a mask and whose call() takes ``mask``) is
        # replayed as it was; every other mask is the one the tensor carries when the model
        # runs, and Keras's MultiHeadAttention removes the masks of the tensors it reads. So a
        # residual Add of an attention's input and output carries no mask when Keras runs it.
        recorded: dict[int, Any] = {}
        carried: dict[int, Any] = {}
        if mask is not None:
            flat_masks = nest.flatten(mask)
            if len(flat_masks) == len(self.inputs):
                recorded = {id(t): m for t, m in zip(self.inputs, flat_masks)}
                carried = dict(recorded)
        for node in self._nodes:
            if node.is_input:
                continue
            layer = node.layer
            sub = ctx.for_layer(layer.name)

            def lookup(x):
                return env[id(x)] if isinstance(x, KerasTensor) else x

            def recorded_mask(x):
                return recorded.get(id(x)) if isinstance(x, KerasTensor) else None

            def carried_mask(x):
                return carried.get(id(x)) if isinstance(x, KerasTensor) else None

            args = nest.map_structure(lookup, node.call_args)
            kw = {k: nest.map_structure(lookup, v) for k, v in node.call_kwargs.items()}
            in_masks = nest.map_structure(recorded_mask, node.call_args)
            now = nest.map_structure(carried_mask, node.call_args)
            kw_masks = {k: nest.map_structure(carried_mask, v) for k, v in node.call_kwargs.items()}
            differ = nest.flatten(now) != nest.flatten(in_masks)
            if getattr(layer, "clears_input_masks", False):
                out, out_now = layer._lower_call(sub, args, kw, now, kw_masks)
                out_recorded = layer.lower_mask(sub, args, in_masks) if differ and layer.supports_masking \
                    else out_now
                for t in node.input_tensors:
                    carried.pop(id(t), None)
            else:
                out, out_recorded = layer._lower_call(sub, args, kw, in_masks, kw_masks)
                replayed = kw.get("mask") is not None or (_has_mask(in_masks) and lower_takes(layer, "mask"))
                out_now = layer.lower_mask(sub, args, now) if differ and layer.supports_masking and not replayed \
                    else out_recorded
            for t, v in zip(nest.flatten(node.outputs), nest.flatten(out)):
                env[id(t)] = v
            for kept, masks in ((recorded, out_recorded), (carried, out_now)):
                for t, m in zip(nest.flatten(node.outputs), nest.flatten(masks)):
                    if m is not None:
                        kept[id(t)] = m
        outputs = nest.map_structure(lambda t: env[id(t)], self._outputs_struct)
        out_masks = nest.map_structure(lambda t: carried.get(id(t)), self._outputs_struct)
        return outputs, out_masks

    def check_inputs(self, inputs) -> None:
        given = nest.flatten(inputs)
        if len(given) != len(self.inputs):
            raise ValueError(f"model {self.name!r} expects {len(self.inputs)} input(s), got {len(given)}")
        from graphc.ops.registry import ShapeError

        for t, want in zip(given, self.inputs):
            if len(t.shape) != len(want.shape) or any(
                    a is not None and b is not None and a != b for a, b in zip(t.shape, want.shape)):
                raise ShapeError(f"input {want._keras_history[0].name!r} expects shape {want.shape}, "
                                 f"got {t.shape}")

    # ------------------------------------------------------------------ inference
    def _weights_version(self) -> tuple:
        return tuple(w.version for w in self.weights)

    def _reference(self):
        from graphc.api import build

        key = "reference"
        entry = self._compiled_cache.get(key)
        if entry is None:
            entry = build(self, target="reference", level=0)
            self._compiled_cache[key] = entry
        return entry

    def _predictor(self):
        """What predict runs: native code or the reference, as the model's backend setting says."""
        from graphc.predictor import model_predictor

        return model_predictor(self)

    def predict(self, x, batch_size: int | None = None, verbose="auto", steps=None, callbacks=None):
        """Outputs for the samples in ``x`` (array, list or dict), computed in batches (on the backend
        ``compile(backend=...)`` or ``graphc.config.set_backend`` chose; native code by default)."""
        return self._predictor().predict(x, batch_size=batch_size)

    def predict_on_batch(self, x):
        return self._predictor().predict(x, batch_size=None, whole=True)

    # ------------------------------------------------------------------ training (graphc.training)
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, backend: str | None = None,
                **kwargs) -> None:
        """Configure training: optimizer, loss(es), loss weights and metrics, as Keras's ``compile``.
        ``backend`` (graphc's own argument): ``"auto"`` (native code when a C compiler is found and the
        model lowers natively, else the reference with a warning saying why), ``"native"`` or
        ``"reference"``; it runs ``fit``, ``evaluate``, ``predict`` and the ``*_on_batch`` calls. None:
        the process default (:mod:`graphc.config`)."""
        from graphc import config
        from graphc.training import compile_model
        from graphc.training.auto_step import step_runner

        setting = config.backend() if backend is None else config.check_backend(backend, "model.compile()")
        trainer = compile_model(self, optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
                                **kwargs)
        trainer.runner = step_runner(trainer, setting)
        self._graphc_backend = setting
        self._compile_config = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights,
                                "metrics": metrics, **kwargs}

    def fit(self, x=None, y=None, **kwargs):
        """Train on arrays (lists/dicts for several inputs/outputs); returns the History."""
        from graphc.training import fit

        return fit(self, x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """The loss (and metrics) on arrays: a float, a list, or a dict with ``return_dict=True``."""
        from graphc.training import evaluate

        return evaluate(self, x, y, **kwargs)

    def train_on_batch(self, x, y=None, **kwargs):
        from graphc.training import train_on_batch

        return train_on_batch(self, x, y, **kwargs)

    def test_on_batch(self, x, y=None, **kwargs):
        from graphc.training import test_on_batch

        return test_on_batch(self, x, y, **kwargs)

    # ------------------------------------------------------------------ Keras files and configs
    def get_config(self) -> dict:
        """Keras's model config: layers with their inbound nodes, inputs and outputs."""
        from graphc.saving import model_config

        return model_config(self)

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Model:
        """A model from the config ``get_config()`` (graphc's or Keras's) returns."""
        from graphc.saving import model_from_config

        return model_from_config(config, custom_objects, sequential=cls.__name__ == "Sequential")

    def save(self, filepath, overwrite: bool = True, **kwargs) -> None:
        """Write a Keras 3 ``.keras`` archive (architecture, weights, compile configuration)."""
        from graphc.saving import save_model

        save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite: bool = True, **kwargs) -> None:
        """Write the weights to a Keras 3 ``.weights.h5`` file."""
        from graphc.saving import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch: bool = False, **kwargs) -> None:
        """Load weights from a ``.weights.h5`` or ``.keras`` file, or from a native weights file a C program
        saved with ``gc_instance_save_weights`` (recognised by its magic); all checked before any is set."""
        from graphc.saving import load_weights
        from graphc.saving.native_weights import is_native_weights_file, load_native_weights

        if is_native_weights_file(filepath):
            load_native_weights(self, filepath, skip_mismatch=skip_mismatch)
            return
        load_weights(self, filepath, skip_mismatch=skip_mismatch)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, inputs={len(self.inputs)}, outputs={len(self.outputs)}>"


Functional = Model
