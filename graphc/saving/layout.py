"""Where each weight lives in a Keras 3 weights file (``model.weights.h5``).

Keras walks the model like an object graph: an object's own variables go to
``<path>/vars/<i>`` (trainable ones first, in creation order), then each child is visited at
``<path>/<attribute>``. A list of layers (a model's ``layers``) is a container whose items
are named by their *class*, snake-cased and made unique in list order (``dense``,
``dense_1``; a nested functional model is ``functional``), never by the layer names. An
object reached twice (a shared layer) is stored at the first path only.

graphc's layers hold their weights directly where Keras sometimes has a child object: a
Keras ``LSTM``/``GRU``/``SimpleRNN``/``ConvLSTM*D`` keeps them in its ``cell``, so graphc's
recurrent layers map their own weights to ``<path>/cell/vars``. Wrappers keep the wrapped layer at
``<path>/layer`` like Keras, because graphc names the attribute the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from graphc.frontend.input_layer import InputLayer
from graphc.frontend.layer import Layer, Variable
from graphc.frontend.model import Model, map_graph
from graphc.frontend.sequential import Sequential
from graphc.saving import registry

# Keras layers whose weights live in a ``cell`` child object.
CELL_LAYERS = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell",
               "ConvLSTM1D": "conv_lstm_cell", "ConvLSTM2D": "conv_lstm_cell", "ConvLSTM3D": "conv_lstm_cell"}


@dataclass
class WeightGroup:
    """One ``<path>/vars`` group: the object's name, its model path (for messages), its variables."""

    path: str
    name: str
    where: str
    variables: list[Variable] = field(default_factory=list)

    @property
    def vars_path(self) -> str:
        return f"{self.path}/vars" if self.path else "vars"


def to_snake_case(name: str) -> str:
    """Keras's rule for container entry names (``Conv2D`` -> ``conv2d``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras_flatten(structure) -> list:
    """Leaves in Keras's order: lists and tuples in order, dicts by sorted key (as ``keras.tree``)."""
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in keras_flatten(item)]
    if isinstance(structure, dict):
        return [leaf for key in sorted(structure) for leaf in keras_flatten(structure[key])]
    return [structure]


def keras_layer_order(model: Model) -> list[Layer]:
    """The layers of a functional model in the order Keras gives them.

    Keras flattens dict inputs and outputs by sorted key before walking the graph, and the
    walk's order names the weight groups, so it is recomputed here rather than taken from
    ``model.layers``.
    """
    if isinstance(model, Sequential) or not model._nodes:
        return list(model.layers)
    _, layers = map_graph(keras_flatten(model._inputs_struct), keras_flatten(model._outputs_struct))
    return layers


def _own_variables(layer: Layer) -> list[Variable]:
    return list(layer._trainable_weights) + list(layer._non_trainable_weights)


def _children(obj: Layer, layer_orders: dict[int, list[Layer]]) -> list[tuple[str, object]]:
    if isinstance(obj, Sequential):
        return [("layers", obj.layers)]
    if isinstance(obj, Model):  # Keras's ``model.layers``, where operations (``x + 1``) are not layers
        layers = layer_orders.get(id(obj)) or keras_layer_order(obj)
        return [("layers", [layer for layer in layers if not registry.is_operation(layer)])]
    if isinstance(obj, InputLayer):
        return []
    children = []
    for attr in sorted(vars(obj)):
        value = getattr(obj, attr)
        if not attr.startswith("_") and isinstance(value, Layer) and value is not obj:
            children.append((attr, value))
        elif not attr.startswith("_") and isinstance(value, list) and value and all(
                isinstance(v, Layer) for v in value):
            children.append((attr, value))  # a list of layers (StackedRNNCells' cells): a container
    return children


def weight_groups(model: Layer, layer_orders: dict[int, list[Layer]] | None = None) -> list[WeightGroup]:
    """Every ``vars`` group Keras writes for ``model``, in Keras's visiting order.

    ``layer_orders`` overrides the layer order of functional models (by id), for models
    built from a config whose layer order named the file's groups.
    """
    orders = layer_orders or {}
    groups: list[WeightGroup] = []
    visited: set[int] = set()

    def visit(obj: Layer, path: str, where: str) -> None:
        if id(obj) in visited:
            return
        visited.add(id(obj))
        class_name = registry.keras_class_name(obj, strict=False)
        cell = CELL_LAYERS.get(class_name) if not hasattr(obj, "cell") else None
        if cell is not None:
            groups.append(WeightGroup(path, obj.name, where))
            groups.append(WeightGroup(_join(path, "cell"), cell, where, _own_variables(obj)))
            return
        own = [] if isinstance(obj, Model) else _own_variables(obj)
        groups.append(WeightGroup(path, obj.name, where, own))
        for attr, child in _children(obj, orders):
            child_path = _join(path, attr)
            if isinstance(child, list):
                used: dict[str, int] = {}
                for item in child:
                    entry = _unique(to_snake_case(registry.keras_class_name(item, strict=False)), used)
                    visit(item, _join(child_path, entry), f"{where}/{item.name}" if where else item.name)
            else:
                visit(child, child_path, f"{where}/{child.name}" if where else child.name)

    visit(model, "", model.name)
    return groups


def _unique(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


__all__ = ["WeightGroup", "weight_groups", "keras_layer_order", "keras_flatten", "to_snake_case", "CELL_LAYERS"]
