"""Model configs in Keras 3's format: functional graphs, Sequential stacks, nested models.

A functional config lists every layer (in the model's layer order) with its
``inbound_nodes``: one entry per call that belongs to the model, whose ``args``/``kwargs``
hold the call's arguments with each tensor written as a ``__keras_tensor__`` whose
``keras_history`` is ``[layer name, node index, tensor index]``. Node indices count only
the calls that belong to the model. ``input_layers``/``output_layers`` give the same
triples in the model's input/output structure, except that Keras numbers the calls of a
nested *functional* model from 1 there (a leftover of an older built-in node); graphc
models have no such node, so the offset is added on writing and removed on reading.

Reading replays Keras's algorithm: create every layer, then call each layer on its
recorded arguments as soon as the tensors they refer to exist, until every call is made.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.frontend import nest
from graphc.frontend.input_layer import InputLayer
from graphc.frontend.layer import Layer
from graphc.frontend.model import Model
from graphc.frontend.sequential import Sequential
from graphc.frontend.tensor import KerasTensor
from graphc.saving import registry
from graphc.saving.errors import KerasFormatError, UnsupportedKerasError
from graphc.saving.layout import keras_layer_order

FUNCTIONAL_MODULE = "keras.src.models.functional"


def _is_functional(layer: Layer) -> bool:
    return isinstance(layer, Model) and not isinstance(layer, Sequential)


# ---------------------------------------------------------------------- graphc -> Keras
def serialize_layer(layer: Layer) -> dict:
    """The Keras serialization of a layer or model: ``{"module", "class_name", "config", ...}``."""
    class_name = registry.keras_class_name(layer)
    if class_name == "Functional":
        return {"module": FUNCTIONAL_MODULE, "class_name": "Functional", "config": functional_config(layer),
                "registered_name": "Functional", "build_config": {"input_shape": None}}
    if class_name == "Sequential":
        out = {"module": "keras", "class_name": "Sequential", "config": sequential_config(layer),
               "registered_name": None}
        shape = out["config"].get("build_input_shape")
        if shape is not None:
            out["build_config"] = {"input_shape": shape}
        return out
    module, class_name, registered_name = registry.keras_identity(layer)
    if registry.is_operation(layer):  # a keras.ops node: its config is the op's arguments, it has no build
        return {"module": module, "class_name": class_name, "config": registry.plain(layer.get_config()),
                "registered_name": registered_name}
    out = {"module": module, "class_name": class_name,
           "config": registry.config_to_keras(layer, serialize_layer), "registered_name": registered_name}
    build_config = _build_config(layer)
    if build_config is not None:
        out["build_config"] = build_config
    return out


def _build_config(layer: Layer) -> dict | None:
    """Keras's ``build_config``: the layer's own ``get_build_config()`` where it has one (a layer
    built from several shapes, as MultiHeadAttention's query, value and key), else the input
    shape(s) of its first call."""
    if layer.built and hasattr(layer, "get_build_config"):
        return layer.get_build_config()
    shape = _build_shape(layer)
    return None if shape is None else {"input_shape": shape}


def _build_shape(layer: Layer) -> Any:
    """The input shape(s) of the layer's first call, as Keras's ``build_config`` records it."""
    if isinstance(layer, InputLayer) or not layer._inbound_nodes or not layer.built:
        return None
    args = layer._inbound_nodes[0].call_args
    if not all(isinstance(t, KerasTensor) for t in nest.flatten(args)):
        return None
    return registry.plain(nest.map_structure(lambda t: list(t.shape), args))


def functional_config(model: Model) -> dict:
    """``Model.get_config()`` of a functional model, in Keras 3's format."""
    own = {id(node) for node in model._nodes}

    def node_index(layer: Layer, index: int) -> int:
        return sum(1 for node in layer._inbound_nodes[:index] if id(node) in own)

    def tensor_config(t: Any) -> Any:
        if not isinstance(t, KerasTensor):
            return registry.plain_argument(t)
        layer, index, tensor_index = t._keras_history
        return {"class_name": "__keras_tensor__",
                "config": {"shape": list(t.shape), "dtype": t.dtype,
                           "keras_history": [layer.name, node_index(layer, index), tensor_index]}}

    def io_config(t: KerasTensor) -> list:
        layer, index, tensor_index = t._keras_history
        return [layer.name, node_index(layer, index) + (1 if _is_functional(layer) else 0), tensor_index]

    layer_configs = []
    for layer in keras_layer_order(model):
        nodes = []
        for node in layer._inbound_nodes:
            if id(node) not in own or node.is_input:
                continue
            # an operation's call arguments are positional (``Add()(x, 3.0)``); a layer's are one structure
            args = list(node.call_args) if registry.is_operation(layer) else [node.call_args]
            nodes.append({"args": nest.map_structure(tensor_config, args),
                          "kwargs": {k: nest.map_structure(tensor_config, v) for k, v in node.call_kwargs.items()}})
        entry = serialize_layer(layer)
        entry["name"] = layer.name
        entry["inbound_nodes"] = nodes
        layer_configs.append(entry)
    return {"name": model.name, "trainable": model.trainable, "layers": layer_configs,
            "input_layers": nest.map_structure(io_config, model._inputs_struct),
            "output_layers": nest.map_structure(io_config, model._outputs_struct)}


def sequential_config(model: Sequential) -> dict:
    """``get_config()`` of a Sequential model (its InputLayer first when it has one), as Keras's."""
    layers = list(model._stack)
    config = {"name": model.name, "trainable": model.trainable, "dtype": registry.dtype_policy("float32"),
              "layers": [serialize_layer(layer) for layer in layers]}
    if layers and isinstance(layers[0], InputLayer):
        config["build_input_shape"] = list(layers[0].batch_shape)
    return config


def model_config(model: Model) -> dict:
    """``Model.get_config()``: the functional or Sequential config."""
    return sequential_config(model) if isinstance(model, Sequential) else functional_config(model)


# ---------------------------------------------------------------------- Keras -> graphc
class _NotReadyError(Exception):
    """A node refers to a call that has not been replayed yet."""


class Loader:
    """Builds graphc layers and models from Keras configs; remembers what weight loading needs.

    ``layer_orders`` maps each functional model built to its layers in the order of its config,
    which is the order Keras used to name the model's weight groups.
    """

    def __init__(self, custom_objects: dict | None = None):
        self.custom_objects = dict(custom_objects or {})
        self.layer_orders: dict[int, list[Layer]] = {}
        self._shared: dict[Any, Layer] = {}
        self._pending_builds: list[tuple[Layer, Any]] = []

    # -------------------------------------------------------------- one layer
    def layer(self, data: Any, where: str) -> Layer:
        """The graphc layer or model for one serialized Keras layer."""
        if not isinstance(data, dict) or "class_name" not in data or not isinstance(data.get("config"), dict):
            raise KerasFormatError(f"layer {where!r}: expected a serialized layer with 'class_name' and "
                                   f"'config', got {_short(data)}")
        shared_id = data.get("shared_object_id")
        if shared_id is not None and shared_id in self._shared:
            return self._shared[shared_id]
        class_name = data["class_name"]
        config = dict(data["config"])
        name = config.get("name") or data.get("name")
        path = f"{where}/{name}" if where and name else (name or where)
        if class_name in registry.FUNCTIONAL_NAMES and "layers" in config:
            obj: Layer = self.functional(config, path)
        elif class_name == "Sequential":
            obj = self.sequential(config, path)
        else:
            obj = self._plain_layer(class_name, data, config, path)
        if shared_id is not None:
            self._shared[shared_id] = obj
        return obj

    def _plain_layer(self, class_name: str, data: dict, config: dict, path: str) -> Layer:
        cls = self.custom_objects.get(data.get("registered_name") or "") or self.custom_objects.get(class_name)
        if cls is None:
            module = data["module"] if "module" in data else registry.LAYERS_MODULE  # no module: an older config
            cls = registry.lookup(class_name, path, module, data.get("registered_name"))
        if "name" not in config and isinstance(data.get("name"), str):  # Keras leaves it out for custom classes
            config["name"] = data["name"]
        kwargs = registry.config_to_graphc(cls, class_name, config, path, self.layer)
        try:
            obj = cls.from_config(kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            raise UnsupportedKerasError(f"layer {path!r}: cannot create a graphc {cls.__name__} from its Keras "
                                        f"config: {exc}") from None
        build = data.get("build_config")
        if isinstance(build, dict) and build.get("input_shape") is not None and not obj.built:
            self._pending_builds.append((obj, build["input_shape"]))
        return obj

    def finish(self) -> None:
        """Build the layers no call has built (their ``build_config`` says how)."""
        for layer, shape in self._pending_builds:
            if not layer.built:
                try:
                    layer.build(_shape_tuples(shape))
                except (TypeError, ValueError) as exc:
                    raise KerasFormatError(f"layer {layer.name!r}: cannot build it for its recorded input shape "
                                           f"{shape}: {exc}") from None
                layer.built = True
        self._pending_builds.clear()

    # -------------------------------------------------------------- models
    def sequential(self, config: dict, path: str) -> Sequential:
        layer_configs = config.get("layers")
        if not isinstance(layer_configs, list):
            raise KerasFormatError(f"Sequential model {path!r}: its config has no 'layers' list")
        layer_configs = [_free_batch(entry) if i == 0 else entry for i, entry in enumerate(layer_configs)]
        layers = [self.layer(entry, path) for entry in layer_configs]
        try:
            model = Sequential(layers=layers, name=config.get("name"), trainable=config.get("trainable", True))
            shape = config.get("build_input_shape")
            if not (model.built and model._nodes) and isinstance(shape, (list, tuple)) and shape:
                model.build(tuple(shape))
        except (TypeError, ValueError) as exc:
            raise KerasFormatError(f"Sequential model {path!r}: {exc}") from None
        return model

    def functional(self, config: dict, path: str) -> Model:
        for key in ("layers", "input_layers", "output_layers"):
            if key not in config:
                raise KerasFormatError(f"functional model {path!r}: its config has no {key!r}")
        created: dict[str, Layer] = {}
        queue: dict[str, list] = {}
        order: list[str] = []
        for entry in config["layers"]:
            if not isinstance(entry, dict):
                raise KerasFormatError(f"functional model {path!r}: a layer entry is {_short(entry)}")
            name = entry.get("name") or (entry.get("config") or {}).get("name")
            if not isinstance(name, str):
                raise KerasFormatError(f"functional model {path!r}: a layer entry has no name")
            if name in created:
                raise KerasFormatError(f"functional model {path!r}: two layers are named {name!r}")
            created[name] = self.layer(entry, path)
            queue[name] = list(entry.get("inbound_nodes") or [])
            order.append(name)

        while any(queue.values()):
            progressed = False
            for name in order:
                pending = queue[name]
                while pending:
                    try:
                        args, kwargs = self._node_arguments(pending[0], created, f"{path}/{name}")
                    except _NotReadyError:
                        break
                    self._call(created[name], args, kwargs, f"{path}/{name}")
                    pending.pop(0)
                    progressed = True
            if not progressed:
                stuck = [name for name in order if queue[name]]
                raise KerasFormatError(f"functional model {path!r}: the calls of layer(s) {stuck} refer to "
                                       "calls that never happen (the graph has a loop or a missing node)")

        def tensor(ref: list) -> KerasTensor:
            name, index, tensor_index = ref
            layer = created.get(name)
            if layer is None:
                raise KerasFormatError(f"functional model {path!r}: input/output refers to unknown layer {name!r}")
            if _is_functional(layer):
                index -= 1
            try:
                return layer._inbound_nodes[index].output_tensors[tensor_index]
            except (IndexError, TypeError):
                raise KerasFormatError(f"functional model {path!r}: layer {name!r} has no output "
                                       f"[{index}, {tensor_index}]") from None

        inputs = _map_refs(tensor, config["input_layers"], path)
        outputs = _map_refs(tensor, config["output_layers"], path)
        try:
            model = Model(inputs, outputs, name=config.get("name"), trainable=config.get("trainable", True))
        except (TypeError, ValueError) as exc:
            raise KerasFormatError(f"functional model {path!r}: {exc}") from None
        self.layer_orders[id(model)] = [created[name] for name in order]
        return model

    def _node_arguments(self, node: Any, created: dict[str, Layer], where: str) -> tuple[list, dict]:
        if isinstance(node, list):  # the older format: [[layer, node, tensor, kwargs], ...]
            tensors = []
            kwargs: dict = {}
            for ref in node:
                if not isinstance(ref, list) or len(ref) not in (3, 4):
                    raise KerasFormatError(f"layer {where!r}: cannot read inbound node {_short(node)}")
                tensors.append(self._history_tensor(ref[:3], created, where))
                kwargs = ref[3] if len(ref) == 4 else {}
            return [tensors[0] if len(tensors) == 1 else tensors], dict(kwargs)
        if not isinstance(node, dict):
            raise KerasFormatError(f"layer {where!r}: cannot read inbound node {_short(node)}")
        revive = lambda value: self._revive(value, created, where)
        args = revive(node.get("args", []))
        kwargs = revive(node.get("kwargs", {}))
        args = list(args) if isinstance(args, tuple) else args
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise KerasFormatError(f"layer {where!r}: cannot read inbound node {_short(node)}")
        if "mask" in kwargs and not any(m is not None for m in nest.flatten(kwargs["mask"])):
            del kwargs["mask"]  # an explicit mask (Keras records the one it passed) is given to the call
        return args, kwargs

    def _revive(self, value: Any, created: dict[str, Layer], where: str) -> Any:
        if isinstance(value, dict):
            kind = value.get("class_name")
            if kind == "__keras_tensor__":
                history = (value.get("config") or {}).get("keras_history")
                return self._history_tensor(history, created, where)
            if kind in ("__numpy__", "__tensor__"):  # a backend tensor's value, as Keras writes it
                config = value.get("config") or {}
                return np.asarray(config.get("value"), dtype=config.get("dtype"))
            if kind == "__slice__":
                config = value.get("config") or {}
                return slice(*(self._revive(config.get(k), created, where) for k in ("start", "stop", "step")))
            if kind == "__ellipsis__":
                return Ellipsis
            if kind == "__tuple__":
                return tuple(self._revive(v, created, where) for v in (value.get("config") or {}).get("value", []))
            return {k: self._revive(v, created, where) for k, v in value.items()}
        if isinstance(value, list):
            return [self._revive(v, created, where) for v in value]
        if isinstance(value, tuple):  # a live config (not through JSON) keeps Keras's tuples
            return tuple(self._revive(v, created, where) for v in value)
        return value

    def _history_tensor(self, history: Any, created: dict[str, Layer], where: str) -> KerasTensor:
        if not isinstance(history, list) or len(history) != 3:
            raise KerasFormatError(f"layer {where!r}: cannot read the tensor reference {_short(history)}")
        name, index, tensor_index = history
        layer = created.get(name)
        if layer is None:
            raise KerasFormatError(f"layer {where!r}: its input comes from unknown layer {name!r}")
        if not isinstance(index, int) or index >= len(layer._inbound_nodes):
            raise _NotReadyError
        outputs = layer._inbound_nodes[index].output_tensors
        if not isinstance(tensor_index, int) or not 0 <= tensor_index < len(outputs):
            raise KerasFormatError(f"layer {where!r}: layer {name!r} call {index} has no output {tensor_index}")
        return outputs[tensor_index]

    @staticmethod
    def _call(layer: Layer, args: list, kwargs: dict, where: str) -> None:
        try:
            if len(args) == 1:
                layer(args[0], **kwargs)
            else:
                layer(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise KerasFormatError(f"layer {where!r}: replaying its call failed: {exc}") from None


def _map_refs(fn, structure: Any, path: str) -> Any:
    """Apply ``fn`` to each ``[layer, node, tensor]`` triple of an input/output structure."""
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return fn(structure)
    if isinstance(structure, dict):
        return {k: _map_refs(fn, v, path) for k, v in structure.items()}
    if isinstance(structure, list):
        return [_map_refs(fn, v, path) for v in structure]
    raise KerasFormatError(f"functional model {path!r}: cannot read the input/output reference {_short(structure)}")


def _free_batch(entry: Any) -> Any:
    """A Sequential's InputLayer with a free batch dimension.

    Keras records the batch size of the data that first built a Sequential model
    (``batch_shape: [16, 4]``) but never enforces it; graphc enforces fixed dims, so the
    batch dimension is made free, as Keras treats it.
    """
    if not (isinstance(entry, dict) and entry.get("class_name") == "InputLayer"
            and isinstance(entry.get("config"), dict)):
        return entry
    shape = entry["config"].get("batch_shape")
    if not isinstance(shape, (list, tuple)) or not shape or shape[0] is None:
        return entry
    return {**entry, "config": {**entry["config"], "batch_shape": [None, *shape[1:]]}}


def _shape_tuples(shape: Any) -> Any:
    if isinstance(shape, list) and all(d is None or isinstance(d, int) for d in shape):
        return tuple(shape)
    if isinstance(shape, (list, tuple)):
        return [_shape_tuples(s) for s in shape]
    if isinstance(shape, dict):
        return {k: _shape_tuples(v) for k, v in shape.items()}
    return shape


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def layer_from_config(cls: type, config: dict) -> Layer:
    """``cls.from_config(config)``: graphc's or Keras's layer config, nested layers included."""
    if not isinstance(config, dict):
        raise TypeError(f"{cls.__name__}.from_config takes a config dict, got {type(config).__name__}")
    loader = Loader()
    where = str(config.get("name") or cls.__name__)
    kwargs = registry.config_to_graphc(cls, cls.__name__, config, where, loader.layer)
    layer = cls(**kwargs)
    loader.finish()
    return layer


def deserialize(data: dict, custom_objects: dict | None = None, where: str = "") -> tuple[Layer, Loader]:
    """A graphc layer or model from its Keras serialization, and the loader that built it."""
    loader = Loader(custom_objects)
    obj = loader.layer(data, where)
    loader.finish()
    return obj, loader


def model_from_config(config: dict, custom_objects: dict | None = None, sequential: bool = False) -> Model:
    """``Model.from_config``: a model from the config ``Model.get_config()`` returns."""
    if not isinstance(config, dict):
        raise KerasFormatError(f"a model config is a dict, got {type(config).__name__}")
    loader = Loader(custom_objects)
    if "class_name" in config and "config" in config:
        model = loader.layer(config, "")
    elif sequential or ("input_layers" not in config and "layers" in config):
        model = loader.sequential(config, config.get("name") or "")
    else:
        model = loader.functional(config, config.get("name") or "")
    loader.finish()
    if not isinstance(model, Model):
        raise KerasFormatError(f"the config describes a {type(model).__name__}, not a model")
    return model


__all__ = ["serialize_layer", "functional_config", "sequential_config", "model_config", "Loader", "deserialize",
           "model_from_config"]
