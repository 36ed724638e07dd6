"""PyTorch twins of graphc models: plain ``torch.nn`` modules with the same weights, for benchmarks.

:func:`torch_twin` walks a graphc Model's layer calls and writes the ``forward`` a PyTorch user
would write by hand: one ``nn.Linear`` / ``nn.Conv2d`` / ``nn.LayerNorm``... per layer,
activations as ``torch.relu``..., padding as ``F.pad``, attention as
``F.scaled_dot_product_attention``, in PyTorch's own layout (images NCHW, Conv1D inputs NCW,
sequences for ``nn.LSTM`` batch-first). The forward is straight-line generated source (as
``torch.fx`` does), so calling the twin costs what a hand-written module costs. Image inputs are
handed over in NCHW and outputs come back in PyTorch's layout; :meth:`TorchTwin.to_torch` and
:meth:`TorchTwin.to_numpy` convert once, outside any timing.

Each value of the forward is in one of two layouts: as Keras holds it ("cl"), or with the last
(channel) axis moved to dim 1 ("cf"). A layer that cares (convolutions, pooling, LayerNormalization)
asks for its layout and a permute is written where the layouts differ; elementwise layers,
padding, cropping and reductions work in whichever layout their input has, mapping Keras axes to
PyTorch dims. Constants (Rescaling's scale, Normalization's mean and standard deviation) are
buffers already in the layout they meet.

Keras's "same" padding is TF-style (the extra row goes after): where it is asymmetric the
twin pads explicitly, as a PyTorch user matching Keras numbers would. Dropout and the other random
layers (and attention dropout) are the identity, as they are at inference; in a training step's twin
(``trainable``) Dropout and SpatialDropout draw their masks, and the other noises are refused.

A twin is exact or absent: each layer's configuration is read option by option, and a layer,
an option value or a call argument that has no twin here (GRU, 3-D convolutions, masks,
``return_attention_scores``, a non-float32 dtype...) raises :class:`TwinError` naming the layer
and what is missing, rather than being ignored.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


class TwinError(ValueError):
    """The model has a layer (or a configuration of one) without a PyTorch twin here."""


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF-style "same" padding of one spatial dim: (before, after)."""
    k_eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def pad_same(x, kernel: Sequence[int], strides: Sequence[int], dilation: Sequence[int], value: float = 0.0):
    """Pad a channels-first tensor's spatial dims for Keras's "same" padding (sizes known at run time)."""
    from torch.nn import functional

    pads: list[int] = []
    spatial = x.shape[2:]
    for size, k, s, d in reversed(list(zip(spatial, kernel, strides, dilation))):
        pads.extend(_same_pads(int(size), k, s, d))
    return functional.pad(x, pads, value=value) if any(pads) else x


_ACTIVATIONS = {
    "relu": "torch.relu({x})", "sigmoid": "torch.sigmoid({x})", "tanh": "torch.tanh({x})",
    "elu": "F.elu({x})", "selu": "F.selu({x})", "softplus": "F.softplus({x})", "silu": "F.silu({x})",
    "swish": "F.silu({x})", "gelu": "F.gelu({x})", "relu6": "F.relu6({x})", "hard_sigmoid": "F.hardsigmoid({x})",
    "softsign": "F.softsign({x})", "exponential": "torch.exp({x})", "leaky_relu": "F.leaky_relu({x}, 0.2)",
    "hard_silu": "F.hardswish({x})", "hard_swish": "F.hardswish({x})", "mish": "F.mish({x})",
    "log_sigmoid": "F.logsigmoid({x})", "hard_tanh": "F.hardtanh({x})", "tanh_shrink": "F.tanhshrink({x})",
}

# Keras's torch backend adds this to masked attention scores (graphc's MultiHeadAttention does too
# on the same path), and its masked Softmax writes this into them.
_SDPA_MASK_VALUE = -0.7 * 3.38953e38
_SOFTMAX_MASK_VALUE = -1e9


class _Value:
    """A tensor of the generated forward: its variable, rank and layout ("cl" as Keras, "cf" channels-first)."""

    def __init__(self, var: str, rank: int, layout: str):
        self.var, self.rank, self.layout = var, rank, layout


class _Writer:
    """Collects the twin's modules, buffers and parameters and the statements of its forward."""

    def __init__(self, torch_mod, nn, trainable: bool = False):
        self.torch, self.nn = torch_mod, nn
        self.trainable = trainable  # the forward of a training step: random layers draw their noise
        self.modules: dict[str, Any] = {}
        self.arrays: dict[str, tuple[np.ndarray, bool]] = {}  # attribute -> (value, is a parameter)
        self.lines: list[str] = []
        self.by_layer: dict[tuple, str] = {}
        self.converted: dict[tuple[str, str], _Value] = {}
        self.count = 0

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def emit(self, expr: str, rank: int, layout: str) -> _Value:
        v = self.var()
        self.lines.append(f"{v} = {expr}")
        return _Value(v, rank, layout)

    def _attribute(self, prefix: str, layer, part: str) -> str:
        name = prefix + "".join(c if c.isalnum() else "_" for c in layer.name + part)
        while name in self.modules or name in self.arrays:
            name += "_"
        return name

    def module(self, layer, make, part: str = "") -> str:
        """The attribute holding ``layer``'s module (``part``: a second one); made once, so shared layers share it."""
        key = (id(layer), part)
        if key not in self.by_layer:
            name = self._attribute("m_", layer, part)
            self.modules[name] = make()
            self.by_layer[key] = name
        return f"self.{self.by_layer[key]}"

    def array(self, layer, part: str, make: Callable[[], np.ndarray], *, param: bool = False, dtype=np.float32) -> str:
        """The attribute holding ``layer``'s constant (a buffer) or weight (``param``) ``part``, made once."""
        key = (id(layer), part, param)
        if key not in self.by_layer:
            name = self._attribute("p_" if param else "b_", layer, "_" + part)
            self.arrays[name] = (np.array(make(), dtype=dtype, order="C"), param)  # owned, writable
            self.by_layer[key] = name
        return f"self.{self.by_layer[key]}"

    def layout(self, v: _Value, want: str) -> _Value:
        """``v`` in layout ``want`` (a permute where the layouts differ; rank < 3 has no layout)."""
        if v.rank < 3 or v.layout == want:
            return v
        key = (v.var, want)  # one permute per value, however many layers read it
        if key not in self.converted:
            if v.rank == 3:
                self.converted[key] = self.emit(f"{v.var}.transpose(1, 2)", 3, want)
            else:
                order = (0, v.rank - 1, *range(1, v.rank - 1)) if want == "cf" else (0, *range(2, v.rank), 1)
                self.converted[key] = self.emit(f"{v.var}.permute{order}", v.rank, want)
        return self.converted[key]

    def activation(self, v: _Value, name: Any) -> _Value:
        if name in (None, "linear"):
            return v
        if not isinstance(name, str):
            raise TwinError(f"activation {name!r} has no PyTorch twin here")
        if name in ("softmax", "log_softmax"):
            return self.emit(f"torch.{name}({v.var}, dim={self.dim(v, -1)})", v.rank, v.layout)
        if name not in _ACTIVATIONS:
            raise TwinError(f"activation {name!r} has no PyTorch twin here")
        return self.emit(_ACTIVATIONS[name].format(x=v.var), v.rank, v.layout)

    @staticmethod
    def dim(v: _Value, axis: int) -> int:
        """PyTorch dim of Keras ``axis`` of ``v`` (channels move to dim 1 in the cf layout)."""
        axis = axis % v.rank
        if v.layout == "cf" and v.rank >= 3 and axis > 0:
            return 1 if axis == v.rank - 1 else axis + 1
        return axis


def _t(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _set(param, array: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        param.copy_(_t(array))


def _in_layout(array: np.ndarray, v: _Value) -> np.ndarray:
    """``array`` (broadcasting right-aligned against Keras's view of ``v``) at full rank in ``v``'s layout."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 0:
        return array
    if array.ndim > v.rank:
        raise TwinError(f"a constant of shape {array.shape} does not broadcast against a rank-{v.rank} tensor")
    array = array.reshape((1,) * (v.rank - array.ndim) + array.shape)
    return np.moveaxis(array, -1, 1) if v.layout == "cf" and v.rank >= 3 else array


class TorchTwin:
    """A generated ``torch.nn.Module`` (``module``) plus the conversions of inputs and outputs."""

    def __init__(self, module, input_plan: list[tuple[str, str, int]], output_layouts: list[tuple[str, int]],
                 source: str):
        self.module = module
        self.input_plan = input_plan  # (kind "float"/"ids", layout, rank) per input
        self.output_layouts = output_layouts
        self.source = source

    def to_torch(self, arrays: Sequence[np.ndarray]) -> list:
        """Model inputs (graphc order, Keras layout) as the twin's torch tensors (converted once)."""
        import torch

        out = []
        for a, (kind, layout, rank) in zip(arrays, self.input_plan):
            a = np.asarray(a)
            if layout == "cf" and rank >= 3:
                a = np.moveaxis(a, -1, 1)
            out.append(torch.from_numpy(np.ascontiguousarray(a.astype(np.int64 if kind == "ids" else np.float32))))
        return out

    def to_numpy(self, outputs) -> list[np.ndarray]:
        """The twin's outputs in graphc's order and Keras's layout."""
        if not isinstance(outputs, (tuple, list)):
            outputs = [outputs]
        result = []
        for o, (layout, rank) in zip(outputs, self.output_layouts):
            a = o.detach().numpy()
            result.append(np.moveaxis(a, 1, -1) if layout == "cf" and rank >= 3 else a)
        return result

    def __call__(self, *tensors):
        return self.module(*tensors)


def torch_twin(model, *, trainable: bool = False) -> TorchTwin:
    """A PyTorch twin of the graphc ``model`` with its weights; raises :class:`TwinError` where there is none.

    The module is in eval mode with frozen parameters, or (``trainable``) in train mode with
    gradients, for timing training steps.
    """
    try:
        import torch
        from torch import nn
        from torch.nn import functional
    except ImportError as exc:  # pragma: no cover - torch is an optional dependency
        raise TwinError("PyTorch is not installed") from exc
    from graphc.frontend.model import Model

    w = _Writer(torch, nn, trainable)
    env: dict[int, _Value] = {}
    plan: list[tuple[str, str, int]] = []
    args = []
    for i, t in enumerate(model.inputs):
        rank = len(t.shape)
        kind = "ids" if _feeds_embedding(model, t) or t.dtype.startswith("int") else "float"
        layout = "cf" if rank >= 4 or (rank == 3 and _all_consumers_are(model, t, ("Conv1D", "SeparableConv1D",
                                                                                    "MaxPooling1D",
                                                                                    "AveragePooling1D"))) else "cl"
        env[id(t)] = _Value(f"x{i}", rank, layout)
        plan.append((kind, layout, rank))
        args.append(f"x{i}")
    _emit_model(w, model, env, Model)
    outs = [env[id(t)] for t in model.outputs]
    body = "\n".join("    " + line for line in w.lines)
    ret = ", ".join(o.var for o in outs) + ("," if len(outs) == 1 and len(model.outputs) > 1 else "")
    source = f"def forward(self, {', '.join(args)}):\n{body}\n    return {ret}\n"

    class Twin(nn.Module):
        pass

    module = Twin()
    for name, m in w.modules.items():
        module.add_module(name, m)
    for name, (array, param) in w.arrays.items():
        if param:
            module.register_parameter(name, nn.Parameter(torch.from_numpy(array)))
        else:
            module.register_buffer(name, torch.from_numpy(array))
    namespace = {"torch": torch, "F": functional, "pad_same": pad_same}
    exec(compile(source, f"<torch twin of {model.name}>", "exec"), namespace)  # noqa: S102
    module.forward = types.MethodType(namespace["forward"], module)
    module.train(trainable)
    for p in module.parameters():
        p.requires_grad_(trainable)
    return TorchTwin(module, plan, [(o.layout, o.rank) for o in outs], source)


def _consumers(model, tensor) -> list:
    return [n for n in model._nodes if any(t is tensor for t in n.input_tensors)]


def _feeds_embedding(model, tensor) -> bool:
    return any(type(n.layer).__name__ == "Embedding" for n in _consumers(model, tensor))


def _all_consumers_are(model, tensor, names: tuple[str, ...]) -> bool:
    nodes = _consumers(model, tensor)
    return bool(nodes) and all(type(n.layer).__name__ in names for n in nodes)


def _emit_model(w: _Writer, model, env: dict[int, _Value], model_cls) -> None:
    for node in model._nodes:
        if node.is_input:
            continue
        layer = node.layer
        ins = [env[id(t)] for t in node.input_tensors]
        if isinstance(layer, model_cls):
            _check_call(layer, node)
            inner = {id(t): v for t, v in zip(layer.inputs, ins)}
            _emit_model(w, layer, inner, model_cls)
            for t, inner_t in zip(node.output_tensors, layer.outputs):
                env[id(t)] = inner[id(inner_t)]
            continue
        outs = _emit_layer(w, layer, ins, node)
        for t, v in zip(node.output_tensors, outs):
            env[id(t)] = v


# ---------------------------------------------------------------------------- options and call arguments
# Config keys that change nothing at inference in float32: names, the input shape a first layer
# declares, training hyper-parameters of weights (initializers, regularizers, constraints), seeds
# of random layers.
_INERT = frozenset({"name", "trainable", "dtype", "seed", "activity_regularizer", "batch_input_shape"})
_INERT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def _plain(value: Any) -> Any:
    """``value`` with lists as tuples, so configs compare equal whichever sequence type they hold."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _missing(layer, what: str) -> TwinError:
    return TwinError(f"layer {layer.name!r} ({type(layer).__name__}): {what} has no PyTorch twin here")


def _options(layer, cfg: dict, handled: Iterable[str] = (), fixed: dict | None = None) -> None:
    """Refuse any option of ``cfg`` the twin does not implement: ``handled`` keys are honoured, ``fixed``
    ones only at the given value; anything else (an option this module does not know) is refused too."""
    handled = set(handled)
    fixed = fixed or {}
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    if dtype not in (None, "float32"):
        raise _missing(layer, f"dtype={dtype!r}")
    for key, value in cfg.items():
        if key in _INERT or key.endswith(_INERT_SUFFIXES) or key in handled:
            continue
        if key in fixed and _plain(value) == _plain(fixed[key]):
            continue
        raise _missing(layer, f"the option {key}={value!r}")


def _no_noise_in_training(w: _Writer, layer, cfg: dict, *keys: str) -> None:
    """Refuse a layer's own dropout (``keys``) in a training step's twin, where it would draw masks the twin
    does not (at inference it is the identity)."""
    for key in keys:
        if w.trainable and cfg.get(key):
            raise _missing(layer, f"the option {key}={cfg[key]!r} in a training step")


def _check_call(layer, node, allowed: Iterable[str] = ()) -> None:
    """Refuse call arguments beyond the inputs: ``training=True`` and masks change what a layer computes."""
    allowed = set(allowed)
    for key, value in node.call_kwargs.items():
        if key in allowed or (key == "training" and value in (None, False)):
            continue
        shown = "<tensor>" if hasattr(value, "_keras_history") else repr(value)
        raise _missing(layer, f"the call argument {key}={shown}")


# ---------------------------------------------------------------------------- layers
# Keras class name -> fn(w, layer, cfg, ins, node) returning the output values
_LAYERS: dict[str, Callable[..., list[_Value]]] = {}


_Handler = Callable[..., list[_Value]]


def _twin(*kinds: str) -> Callable[[_Handler], _Handler]:
    """Register the decorated function as the twin of the layer classes named ``kinds``."""
    def register(fn: _Handler) -> _Handler:
        for kind in kinds:
            _LAYERS[kind] = fn
        return fn
    return register


def _emit_layer(w: _Writer, layer, ins: list[_Value], node) -> list[_Value]:
    from graphc.frontend.operations.base import Operation

    kind = type(layer).__name__
    if isinstance(layer, Operation):
        _check_call(layer, node)
        return [_emit_operation(w, layer, ins, node)]
    fn = _LAYERS.get(kind) if type(layer).__module__.startswith("graphc.") else None
    if fn is None:
        raise TwinError(f"layer {layer.name!r} ({kind}) has no PyTorch twin here")
    _check_call(layer, node, ("value", "key", "attention_mask", "use_causal_mask") if kind == "MultiHeadAttention"
                else ())
    return fn(w, layer, layer.get_config(), ins, node)


@_twin("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
       "AlphaDropout", "StochasticDepth", "ActivityRegularization", "Identity")
def _identity(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """The identity at inference: every option of these layers is about training noise or losses. In a
    training step's twin (``trainable``) dropout draws its mask as ``F.dropout`` does (the engines' masks
    differ, so their losses do too); the other noises and losses are refused there, not dropped."""
    _options(layer, cfg, cfg)
    kind, x = type(layer).__name__, ins[0]
    noise = [key for key in ("rate", "stddev", "l1", "l2") if cfg.get(key)]  # the options that act in training
    if not w.trainable or not noise:
        return list(ins)
    if kind == "Dropout" and cfg.get("noise_shape") is None:
        return [w.emit(f"F.dropout({x.var}, {float(cfg['rate'])!r}, training=self.training)", x.rank, x.layout)]
    if kind.startswith("SpatialDropout") and cfg.get("data_format", "channels_last") == "channels_last":
        x = w.layout(x, "cf")
        return [w.emit(f"F.dropout{kind[-2]}d({x.var}, {float(cfg['rate'])!r}, training=self.training)", x.rank,
                       x.layout)]
    option = "noise_shape" if kind == "Dropout" else "data_format" if kind.startswith("SpatialDropout") else noise[0]
    raise _missing(layer, f"the option {option}={cfg[option]!r} in a training step")


@_twin("Activation")
def _activation_layer(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("activation",))
    return [w.activation(ins[0], cfg["activation"])]


@_twin("ReLU")
def _relu(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """Keras's ReLU: x above ``threshold``, ``negative_slope * (x - threshold)`` below, capped at ``max_value``."""
    _options(layer, cfg, ("max_value", "negative_slope", "threshold"))
    x = ins[0].var
    top, slope, threshold = cfg["max_value"], float(cfg["negative_slope"]), float(cfg["threshold"])
    if slope == 0.0 and threshold == 0.0:
        if top is None:
            expr = f"torch.relu({x})"
        elif float(top) == 6.0:
            expr = f"F.relu6({x})"
        else:
            expr = f"{x}.clamp(0.0, {float(top)!r})"
        return [w.emit(expr, ins[0].rank, ins[0].layout)]
    if threshold == 0.0:
        expr = f"F.leaky_relu({x}, {slope!r})"
    elif slope == 0.0:
        expr = f"F.threshold({x}, {threshold!r}, 0.0)"
    else:
        expr = f"torch.where({x} > {threshold!r}, {x}, {slope!r} * ({x} - {threshold!r}))"
    if top is not None:
        expr = f"({expr}).clamp(max={float(top)!r})"
    return [w.emit(expr, ins[0].rank, ins[0].layout)]


@_twin("LeakyReLU")
def _leaky_relu(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("negative_slope",))
    return [w.emit(f"F.leaky_relu({ins[0].var}, {float(cfg['negative_slope'])!r})", ins[0].rank, ins[0].layout)]


@_twin("ELU")
def _elu(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("alpha",))
    return [w.emit(f"F.elu({ins[0].var}, {float(cfg['alpha'])!r})", ins[0].rank, ins[0].layout)]


@_twin("PReLU")
def _prelu(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """``relu(x) + alpha * min(x, 0)``, alpha a weight per element (one per ``shared_axes`` slice)."""
    _options(layer, cfg, ("shared_axes",))
    x = ins[0]
    alpha = _weight_in_layout(w, layer, "alpha", layer.alpha.numpy(), x)
    return [w.emit(f"torch.relu({x.var}) + {alpha} * {x.var}.clamp(max=0.0)", x.rank, x.layout)]


@_twin("Softmax")
def _softmax(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("axis",))
    x = ins[0]
    axes = cfg["axis"] if isinstance(cfg["axis"], (list, tuple)) else [cfg["axis"]]
    dims = tuple(sorted(w.dim(x, int(a)) for a in axes))
    if len(dims) == 1:
        return [w.emit(f"torch.softmax({x.var}, dim={dims[0]})", x.rank, x.layout)]
    return [w.emit(f"torch.exp({x.var} - torch.logsumexp({x.var}, dim={dims}, keepdim=True))", x.rank, x.layout)]


@_twin("Dense")
def _dense(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("units", "activation", "use_bias"))
    x = w.layout(ins[0], "cl")

    def make():
        m = w.nn.Linear(layer.kernel.shape[0], layer.units, bias=layer.bias is not None)
        _set(m.weight, layer.kernel.numpy().T)
        if layer.bias is not None:
            _set(m.bias, layer.bias.numpy())
        return m
    return [w.activation(w.emit(f"{w.module(layer, make)}({x.var})", x.rank, "cl"), cfg["activation"])]


@_twin("Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")
def _conv_layer(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("filters", "kernel_size", "strides", "padding", "dilation_rate", "groups", "activation",
                          "use_bias", "depth_multiplier", "data_format"))
    return [_emit_conv(w, layer, type(layer).__name__, cfg, ins[0], node.input_tensors[0].shape)]


@_twin("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def _pool_layer(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("pool_size", "strides", "padding", "data_format"))
    return [_emit_pool(w, layer, type(layer).__name__, cfg, ins[0], node.input_tensors[0].shape)]


def _spatial_axes(rank: int, n: int, data_format: str | None) -> tuple[int, ...]:
    """Keras axes of the ``n`` spatial dims of a rank-``rank`` tensor in ``data_format``."""
    first = 2 if data_format == "channels_first" else 1
    return tuple(range(first, first + n))


@_twin("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
       "GlobalAveragePooling2D", "GlobalAveragePooling3D")
def _global_pool(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("data_format", "keepdims"))
    x = ins[0]
    axes = _spatial_axes(x.rank, x.rank - 2, cfg.get("data_format"))
    dims = tuple(sorted(w.dim(x, a) for a in axes))
    op = "amax" if "Max" in type(layer).__name__ else "mean"
    keep = bool(cfg.get("keepdims", False))
    if keep:
        return [w.emit(f"{x.var}.{op}(dim={dims}, keepdim=True)", x.rank, x.layout)]
    # what is left is (batch, channels) in either layout
    return [w.emit(f"{x.var}.{op}(dim={dims})", 2, "cl")]


@_twin("Flatten")
def _flatten(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("data_format",))
    x = w.layout(ins[0], "cl")
    if cfg.get("data_format") == "channels_first" and x.rank > 2:  # Keras flattens in channels-last order
        x = w.emit(f"{x.var}.movedim(1, -1)", x.rank, "cl")
    return [w.emit(f"{x.var}.flatten(1)", 2, "cl")]


@_twin("Reshape")
def _reshape(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("target_shape",))
    x = w.layout(ins[0], "cl")
    target = tuple(int(d) for d in cfg["target_shape"])
    if len(target) >= 3 and all(d == 1 for d in target[:-1]):
        # (batch, 1, ..., 1, C), as a squeeze-and-excite block makes it: straight to channels-first
        ones = ", 1" * (len(target) - 1)
        return [w.emit(f"{x.var}.reshape({x.var}.shape[0], {target[-1]}{ones})", len(target) + 1, "cf")]
    return [w.emit(f"{x.var}.reshape({x.var}.shape[0], *{target})", len(target) + 1, "cl")]


@_twin("Permute")
def _permute(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("dims",))
    x = w.layout(ins[0], "cl")
    return [w.emit(f"{x.var}.permute(0, {', '.join(str(int(d)) for d in cfg['dims'])})", x.rank, "cl")]


@_twin("RepeatVector")
def _repeat_vector(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("n",))
    return [w.emit(f"{ins[0].var}.unsqueeze(1).expand(-1, {int(cfg['n'])}, -1)", 3, "cl")]


@_twin("Embedding")
def _embedding(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("input_dim", "output_dim"), fixed={"mask_zero": False})
    x = ins[0]

    def make():
        m = w.nn.Embedding(layer.input_dim, layer.output_dim)
        _set(m.weight, layer.embeddings.numpy())
        return m
    return [w.emit(f"{w.module(layer, make)}({x.var})", x.rank + 1, "cl")]


@_twin("LSTM")
def _lstm(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("units", "activation", "recurrent_activation", "use_bias", "dropout", "recurrent_dropout",
                          "return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                          "zero_output_for_mask", "unit_forget_bias"))
    _no_noise_in_training(w, layer, cfg, "dropout", "recurrent_dropout")
    return [_emit_lstm(w, layer, cfg, ins[0])]


@_twin("BatchNormalization")
def _batch_norm(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    # renorm_momentum only matters with renorm
    _options(layer, cfg, ("axis", "momentum", "epsilon", "center", "scale", "synchronized", "renorm_momentum"),
             fixed={"renorm": False, "renorm_clipping": None})
    x = ins[0]
    axis = cfg["axis"][0] if isinstance(cfg["axis"], (list, tuple)) else cfg["axis"]
    if axis % x.rank != x.rank - 1:
        raise TwinError(f"layer {layer.name!r}: BatchNormalization(axis={axis}) has no PyTorch twin here")
    x = w.layout(x, "cf") if x.rank >= 3 else x
    if x.rank > 4:
        raise _missing(layer, f"a rank-{x.rank} input")

    def make():
        c = layer.moving_mean.shape[0]
        cls = {2: w.nn.BatchNorm1d, 3: w.nn.BatchNorm1d, 4: w.nn.BatchNorm2d}[x.rank]
        # Keras's momentum weighs the old moving statistic, PyTorch's the batch's
        m = cls(c, eps=cfg["epsilon"], momentum=1.0 - cfg["momentum"], affine=True)
        _set(m.weight, layer.gamma.numpy() if layer.gamma is not None else np.ones(c))
        _set(m.bias, layer.beta.numpy() if layer.beta is not None else np.zeros(c))
        _set(m.running_mean, layer.moving_mean.numpy())
        _set(m.running_var, layer.moving_variance.numpy())
        return m
    return [w.emit(f"{w.module(layer, make)}({x.var})", x.rank, x.layout)]


@_twin("LayerNormalization")
def _layer_norm(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """``nn.LayerNorm`` over the trailing Keras axes (channels of an image: permuted to channels-last,
    as torchvision's ConvNeXt does); ``rms_scaling`` is Keras's ``x * rsqrt(var(x) + eps) * gamma``."""
    _options(layer, cfg, ("axis", "epsilon", "center", "scale", "rms_scaling"))
    x = w.layout(ins[0], "cl")
    shape = node.input_tensors[0].shape
    axes = sorted({int(a) % x.rank for a in (cfg["axis"] if isinstance(cfg["axis"], (list, tuple))
                                              else [cfg["axis"]])})
    if axes != list(range(x.rank - len(axes), x.rank)) or 0 in axes:
        raise _missing(layer, f"axis={cfg['axis']!r} (not the trailing axes)")
    sizes = tuple(int(shape[a]) for a in axes)
    eps = float(cfg["epsilon"])
    if cfg.get("rms_scaling"):
        gamma = w.array(layer, "gamma", lambda: layer.gamma.numpy().reshape(sizes), param=True)
        dims = tuple(axes)
        return [w.emit(f"{x.var} * torch.rsqrt({x.var}.var(dim={dims}, unbiased=False, keepdim=True) + {eps!r}) "
                       f"* {gamma}", x.rank, "cl")]

    def make():
        affine = layer.gamma is not None or layer.beta is not None
        m = w.nn.LayerNorm(sizes, eps=eps, elementwise_affine=affine, bias=layer.beta is not None)
        if affine:
            _set(m.weight, layer.gamma.numpy().reshape(sizes) if layer.gamma is not None else np.ones(sizes))
        if layer.beta is not None:
            _set(m.bias, layer.beta.numpy().reshape(sizes))
        return m
    return [w.emit(f"{w.module(layer, make)}({x.var})", x.rank, "cl")]


@_twin("GroupNormalization")
def _group_norm(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("groups", "axis", "epsilon", "center", "scale"))
    x = ins[0]
    if int(cfg["axis"]) % x.rank != x.rank - 1:
        raise _missing(layer, f"axis={cfg['axis']!r} (not the channels)")
    x = w.layout(x, "cf")
    c = int(node.input_tensors[0].shape[-1])

    def make():
        m = w.nn.GroupNorm(int(cfg["groups"]), c, eps=float(cfg["epsilon"]), affine=True)
        _set(m.weight, layer.gamma.numpy() if layer.gamma is not None else np.ones(c))
        _set(m.bias, layer.beta.numpy() if layer.beta is not None else np.zeros(c))
        return m
    return [w.emit(f"{w.module(layer, make)}({x.var})", x.rank, x.layout)]


@_twin("Rescaling")
def _rescaling(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """``x * scale + offset``: numbers inline, per-channel lists as buffers in the input's layout."""
    _options(layer, cfg, ("scale", "offset"))
    x = ins[0]
    expr = x.var
    for part, op in (("scale", "*"), ("offset", "+")):
        value = np.asarray(cfg[part], dtype=np.float32)
        if value.ndim == 0:
            if (part == "scale" and value == 1.0) or (part == "offset" and value == 0.0):
                continue
            expr = f"{expr} {op} {float(value)!r}"
        else:
            expr = f"{expr} {op} {w.array(layer, f'{part}_{x.layout}{x.rank}', lambda v=value: _in_layout(v, x))}"
    return [w.emit(expr if expr != x.var else f"{x.var}.float()", x.rank, x.layout)]


@_twin("Normalization")
def _normalization(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """``(x - mean) / std`` (``invert``: ``mean + x * std``) with Keras's ``std = max(sqrt(variance), 1e-7)``,
    both buffers in the input's layout, as torchvision's ``Normalize`` holds them."""
    from graphc.frontend.layers.preprocessing import EPSILON

    _options(layer, cfg, ("axis", "mean", "variance", "invert"))
    x = ins[0]
    if layer.normalizes_batch_axis():
        raise _missing(layer, f"axis={cfg['axis']!r} (the batch axis)")

    def mean() -> np.ndarray:
        return _in_layout(layer.statistics()[0], x)

    def std() -> np.ndarray:
        variance = layer.statistics()[1].astype(np.float32)
        return _in_layout(np.maximum(np.sqrt(variance), np.float32(EPSILON)), x)

    m = w.array(layer, f"mean_{x.layout}{x.rank}", mean)
    s = w.array(layer, f"std_{x.layout}{x.rank}", std)
    expr = f"{m} + {x.var} * {s}" if cfg.get("invert") else f"({x.var} - {m}) / {s}"
    return [w.emit(expr, x.rank, x.layout)]


def _weight_in_layout(w: _Writer, layer, part: str, array: np.ndarray, x: _Value) -> str:
    """A learned ``layer`` weight (one parameter, however many layouts meet it) viewed to broadcast against ``x``."""
    p = w.array(layer, part, lambda: array, param=True)
    if x.layout != "cf" or x.rank < 3 or array.ndim == 0:
        return p
    full = (1,) * (x.rank - array.ndim) + tuple(array.shape)
    if array.ndim == 1:
        return f"{p}.view({array.shape[0]}{', 1' * (x.rank - 2)})"
    return f"{p}.reshape{full}.movedim(-1, 1)"


@_twin("LayerScale")
def _layer_scale(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("init_values", "projection_dim"))
    x = ins[0]
    return [w.emit(f"{x.var} * {_weight_in_layout(w, layer, 'gamma', layer.gamma.numpy(), x)}", x.rank, x.layout)]


@_twin("CustomScaleLayer")
def _custom_scale(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("scale",))
    a, b = _aligned(w, ins)
    return [w.emit(f"{a.var} + {b.var} * {float(cfg['scale'])!r}", a.rank, a.layout)]


def _aligned(w: _Writer, ins: list[_Value]) -> list[_Value]:
    """Merge inputs in one layout; a lower-rank input gets unit axes after the batch axis, as Keras's merges do."""
    rank = max(v.rank for v in ins)
    if all(v.rank == rank for v in ins):
        return [w.layout(v, ins[0].layout) for v in ins]
    out = []
    for v in ins:
        v = w.layout(v, "cl")
        if v.rank < rank:
            v = w.emit(f"{v.var}[:, {', '.join(['None'] * (rank - v.rank))}]", rank, "cl")
        out.append(v)
    return out


@_twin("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def _merge(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg)
    kind = type(layer).__name__
    vs = _aligned(w, ins)
    names = [v.var for v in vs]
    if kind == "Add":
        expr = " + ".join(names)
    elif kind == "Subtract":
        expr = f"{names[0]} - {names[1]}"
    elif kind == "Multiply":
        expr = " * ".join(names)
    elif kind == "Average":
        expr = f"({' + '.join(names)}) * {1.0 / len(names)!r}"
    else:
        fn = "torch.maximum" if kind == "Maximum" else "torch.minimum"
        expr = names[0]
        for n in names[1:]:
            expr = f"{fn}({expr}, {n})"
    return [w.emit(expr, vs[0].rank, vs[0].layout)]


@_twin("Concatenate")
def _concatenate(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("axis",))
    vs = [w.layout(v, ins[0].layout) for v in ins]
    dim = w.dim(vs[0], cfg["axis"])
    return [w.emit(f"torch.cat([{', '.join(v.var for v in vs)}], dim={dim})", vs[0].rank, vs[0].layout)]


@_twin("Dot")
def _dot(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("axes", "normalize"))
    axes = cfg["axes"]
    if any(v.rank != 2 for v in ins) or _plain(axes) not in (1, -1, (1, 1), (-1, -1)):
        raise TwinError(f"layer {layer.name!r}: Dot beyond two vectors has no PyTorch twin here")
    a, b = ins[0].var, ins[1].var
    if cfg.get("normalize"):
        a, b = f"F.normalize({a}, dim=1, eps=1e-12)", f"F.normalize({b}, dim=1, eps=1e-12)"
    return [w.emit(f"({a} * {b}).sum(dim=1, keepdim=True)", 2, "cl")]


def _pairs(value: Any, n: int) -> list[tuple[int, int]]:
    """``padding``/``cropping`` of an n-D layer as n (before, after) pairs."""
    value = _plain(value)
    if n == 1:
        return [(int(value[0]), int(value[1]))] if isinstance(value, tuple) else [(int(value), int(value))]
    return [(int(p[0]), int(p[1])) for p in value]


def _spatial_pairs(w: _Writer, layer, cfg: dict, key: str, x: _Value) -> dict[int, tuple[int, int]]:
    """A padding or cropping layer's ``cfg[key]`` as {PyTorch dim of ``x``: (before, after)}, for the
    spatial dims where it is not (0, 0); its other options refused."""
    _options(layer, cfg, (key, "data_format"))
    n = x.rank - 2
    axes = _spatial_axes(x.rank, n, cfg.get("data_format"))
    return {w.dim(x, a): pair for a, pair in zip(axes, _pairs(cfg[key], n)) if pair != (0, 0)}


@_twin("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def _zero_padding(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """``F.pad`` on the spatial dims wherever they are in the input's layout."""
    x, pads = ins[0], _spatial_pairs(w, layer, cfg, "padding", ins[0])
    if not pads:
        return [x]
    flat = [p for d in range(x.rank - 1, min(pads) - 1, -1) for p in pads.get(d, (0, 0))]
    return [w.emit(f"F.pad({x.var}, {tuple(flat)})", x.rank, x.layout)]


@_twin("Cropping1D", "Cropping2D", "Cropping3D")
def _cropping(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """A slice of the spatial dims wherever they are in the input's layout."""
    x, crops = ins[0], _spatial_pairs(w, layer, cfg, "cropping", ins[0])
    if not crops:
        return [x]
    index = []
    for d in range(max(crops) + 1):
        a, b = crops.get(d, (0, 0))
        index.append(":" if not (a or b) else f"{a if a else ''}:{-b if b else ''}")
    return [w.emit(f"{x.var}[{', '.join(index)}]", x.rank, x.layout)]


@_twin("UpSampling1D")
def _upsampling_1d(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    _options(layer, cfg, ("size",))
    x = ins[0]
    return [w.emit(f"{x.var}.repeat_interleave({int(cfg['size'])}, dim={w.dim(x, 1)})", x.rank, x.layout)]


@_twin("UpSampling2D", "UpSampling3D")
def _upsampling(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """``F.interpolate``: nearest repeats each element (``nearest-exact`` is exact at integer factors),
    bilinear uses half-pixel centres (``align_corners=False``), as graphc's ``resize`` op does."""
    _options(layer, cfg, ("size", "data_format", "interpolation"))
    # the spatial dims must be the trailing ones: channels-first, in PyTorch's or in Keras's own layout
    x = w.layout(ins[0], "cl" if cfg.get("data_format") == "channels_first" else "cf")
    mode = {"nearest": "nearest-exact", "bilinear": "bilinear"}.get(cfg.get("interpolation", "nearest"))
    if mode is None:
        raise _missing(layer, f"interpolation={cfg['interpolation']!r}")
    factors = tuple(float(s) for s in _plain(cfg["size"]))
    extra = ", align_corners=False" if mode == "bilinear" else ""
    return [w.emit(f"F.interpolate({x.var}, scale_factor={factors}, mode={mode!r}{extra})", x.rank, x.layout)]


# ---------------------------------------------------------------------------- attention
@_twin("MultiHeadAttention")
def _multi_head_attention(w: _Writer, layer, cfg: dict, ins: list[_Value], node) -> list[_Value]:
    """Keras's four projections as ``nn.Linear`` (heads folded into the features), the heads moved next to
    the batch, ``F.scaled_dot_product_attention``, and the output projection.

    Masks follow graphc's (Keras's) two code paths: without dropout a masked score gets Keras's large
    negative bias (a fully masked query row attends uniformly); with dropout it is written over with
    -1e9 and its probability zeroed afterwards, spelled out with explicit matmuls.
    """
    _options(layer, cfg, ("num_heads", "key_dim", "value_dim", "dropout", "use_bias", "output_shape",
                          "attention_axes", "sliding_window"), fixed={"use_gate": False})
    _no_noise_in_training(w, layer, cfg, "dropout")
    from graphc.frontend import nest

    by_id = {id(t): v for t, v in zip(node.input_tensors, ins)}
    kwargs = node.call_kwargs
    query_t = nest.flatten(node.call_args)[0]
    value_t = kwargs["value"]
    key_t = kwargs.get("key", value_t)
    for t, what in ((query_t, "query"), (value_t, "value"), (key_t, "key")):
        if len(t.shape) != 3:
            raise _missing(layer, f"a {what} of rank {len(t.shape)} (the twin takes (batch, steps, features))")
    if _plain(cfg["attention_axes"]) not in (None, (1,)):
        raise _missing(layer, f"attention_axes={cfg['attention_axes']!r}")
    heads, key_dim, value_dim = int(cfg["num_heads"]), int(cfg["key_dim"]), int(cfg["value_dim"])
    q_in, k_in, v_in = (w.layout(by_id[id(t)], "cl") for t in (query_t, key_t, value_t))

    def linear(dense, fan_in: int, fan_out: int):
        def make():
            m = w.nn.Linear(fan_in, fan_out, bias=dense.bias is not None)
            _set(m.weight, dense.kernel.numpy().reshape(fan_in, fan_out).T)
            if dense.bias is not None:
                _set(m.bias, dense.bias.numpy().reshape(fan_out))
            return m
        return make

    def project(dense, x: _Value, fan_in: int, per_head: int) -> _Value:
        mod = w.module(layer, linear(dense, fan_in, heads * per_head), "_" + dense.name)
        return w.emit(f"{mod}({x.var}).unflatten(-1, ({heads}, {per_head})).transpose(1, 2)", 4, "cl")

    q = project(layer.query_dense, q_in, int(query_t.shape[-1]), key_dim)
    k = project(layer.key_dense, k_in, int(key_t.shape[-1]), key_dim)
    v = project(layer.value_dense, v_in, int(value_t.shape[-1]), value_dim)

    keep = None  # a bool (batch or 1, 1, Tq, Tk) expression: True where the query attends
    mask_t = kwargs.get("attention_mask")
    if mask_t is not None:
        m = w.layout(by_id[id(mask_t)], "cl")
        keep = f"{m.var}.bool()" + ".unsqueeze(-3)" * max(0, 4 - m.rank)
    causal = bool(kwargs.get("use_causal_mask", False))
    window = cfg.get("sliding_window")
    if window is not None or (causal and keep is not None):
        q_len, k_len = query_t.shape[1], value_t.shape[1]
        if not isinstance(q_len, int) or not isinstance(k_len, int):
            raise _missing(layer, "a causal or sliding-window mask over free sequence lengths")

        def band():
            i, j = np.arange(q_len)[:, None], np.arange(k_len)[None, :]
            kept = np.ones((q_len, k_len), dtype=bool)
            if causal:
                kept &= j <= i
            if window is not None:
                kept &= np.abs(i - j) < int(window)
            return kept
        band_var = w.array(layer, "band", band, dtype=np.bool_)
        keep = band_var if keep is None else f"{keep} & {band_var}"
        causal = False
    if keep is not None:
        keep = w.emit(keep, 4, "cl").var
    if keep is not None and float(cfg["dropout"]) > 0.0:
        scores = w.emit(f"torch.matmul({q.var} * {1.0 / math.sqrt(key_dim)!r}, {k.var}.transpose(-2, -1))"
                        f".masked_fill(~{keep}, {_SOFTMAX_MASK_VALUE!r})", 4, "cl")
        probs = w.emit(f"torch.softmax({scores.var}, dim=-1).masked_fill(~{keep}, 0.0)", 4, "cl")
        out = w.emit(f"torch.matmul({probs.var}, {v.var})", 4, "cl")
    else:
        extra = ""
        if keep is not None:
            extra = f", attn_mask=torch.where({keep}, 0.0, {_SDPA_MASK_VALUE!r})"
        elif causal:
            extra = ", is_causal=True"
        out = w.emit(f"F.scaled_dot_product_attention({q.var}, {k.var}, {v.var}{extra})", 4, "cl")
    out_dims = tuple(int(d) for d in _plain(cfg["output_shape"]) or (query_t.shape[-1],))
    dense = layer.output_dense
    mod = w.module(layer, linear(dense, heads * value_dim, math.prod(out_dims)), "_" + dense.name)
    expr = f"{mod}({out.var}.transpose(1, 2).flatten(2))"
    if len(out_dims) > 1:
        expr += f".unflatten(-1, {out_dims})"
    return [w.emit(expr, 2 + len(out_dims), "cl")]


# ---------------------------------------------------------------------------- keras.ops operations
_BINARY = {"Add": "{} + {}", "Subtract": "{} - {}", "Multiply": "{} * {}", "TrueDivide": "{} / {}",
           "Divide": "{} / {}", "Power": "{} ** {}", "Maximum": "torch.maximum({}, {})",
           "Minimum": "torch.minimum({}, {})"}
_UNARY = {"Negative": "-{}", "Sqrt": "torch.sqrt({})", "Exp": "torch.exp({})", "Log": "torch.log({})",
          "Tanh": "torch.tanh({})", "Abs": "torch.abs({})", "Absolute": "torch.abs({})", "Square": "torch.square({})",
          "Reciprocal": "torch.reciprocal({})"}


def _is_number(a: Any) -> bool:
    if isinstance(a, bool):
        return False
    return isinstance(a, (int, float, np.number)) or (isinstance(a, np.ndarray) and a.ndim == 0
                                                       and a.dtype.kind in "fiu")


def _emit_operation(w: _Writer, op, ins: list[_Value], node) -> _Value:
    """A ``keras.ops`` arithmetic operation (``x + 3.0``, ``x * y``), NumPy broadcasting, numbers inline."""
    from graphc.frontend import nest

    kind = type(op).__name__
    if not type(op).__module__.endswith("numpy_ops") or (kind not in _BINARY and kind not in _UNARY):
        raise TwinError(f"layer {op.name!r} ({kind}) has no PyTorch twin here")
    by_id = {id(t): v for t, v in zip(node.input_tensors, ins)}
    args = list(node.call_args) if isinstance(node.call_args, (list, tuple)) else [node.call_args]
    tensors = [by_id[id(a)] for a in nest.flatten(args) if id(a) in by_id]
    # NumPy broadcasting aligns trailing Keras axes: mixed ranks meet in Keras's own layout
    layout = tensors[0].layout if len({t.rank for t in tensors}) == 1 else "cl"
    parts = []
    for a in args:
        if id(a) in by_id:
            parts.append(w.layout(by_id[id(a)], layout).var)
        elif _is_number(a):
            number = np.asarray(a)
            parts.append(repr(float(number)) if number.dtype.kind == "f" else repr(int(number)))
        else:
            raise _missing(op, f"the operand {a!r}")
    table, arity = (_BINARY, 2) if kind in _BINARY else (_UNARY, 1)
    if len(parts) != arity:  # (format() would drop an operand past the formula's)
        raise _missing(op, f"{len(parts)} operands (the twin's {kind} takes {arity})")
    return w.emit(table[kind].format(*parts), max(t.rank for t in tensors), layout)


# ---------------------------------------------------------------------------- convolutions, pooling, LSTM
def _padding(w: _Writer, x: _Value, in_shape, cfg: dict, kernel, strides, dilation, value: float = 0.0):
    """(x, padding argument) for a conv/pool with Keras padding ``cfg["padding"]``."""
    mode = cfg.get("padding", "valid")
    n = len(kernel)
    if mode == "valid":
        return x, 0
    if mode == "causal":
        left = (kernel[0] - 1) * dilation[0]
        return w.emit(f"F.pad({x.var}, ({left}, 0))", x.rank, x.layout), 0
    if mode != "same":
        raise TwinError(f"padding {mode!r} has no PyTorch twin here")
    spatial = list(in_shape[1:1 + n])
    if any(s is None for s in spatial):
        return w.emit(f"pad_same({x.var}, {tuple(kernel)}, {tuple(strides)}, {tuple(dilation)}, {value!r})",
                      x.rank, x.layout), 0
    pads = [_same_pads(s, k, st, d) for s, k, st, d in zip(spatial, kernel, strides, dilation)]
    if all(a == b for a, b in pads):
        return x, tuple(a for a, _ in pads)
    flat = [p for pair in reversed(pads) for p in pair]
    return w.emit(f"F.pad({x.var}, {tuple(flat)}, value={value!r})", x.rank, x.layout), 0


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * n


def _emit_conv(w: _Writer, layer, kind: str, cfg: dict, x: _Value, in_shape) -> _Value:
    nn = w.nn
    n = 1 if kind.endswith("1D") else 2
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise TwinError(f"layer {layer.name!r}: data_format={cfg['data_format']!r} has no PyTorch twin here")
    k = _tuple(cfg["kernel_size"], n)
    s = _tuple(cfg["strides"], n)
    d = _tuple(cfg.get("dilation_rate", 1), n)
    x = w.layout(x, "cf")
    x, pad = _padding(w, x, in_shape, cfg, k, s, d)
    conv_cls = nn.Conv1d if n == 1 else nn.Conv2d
    cin = in_shape[-1]
    # Keras (k..., in, out) -> PyTorch (out, in, k...)
    to_torch = (n + 1, n, *range(n))

    if kind.startswith("Separable") or kind.startswith("Depthwise"):
        mult = int(cfg["depth_multiplier"])
        dk = (layer.depthwise_kernel if kind.startswith("Separable") else layer.kernel).numpy()
        # (k..., in, mult) -> (in * mult, 1, k...): output channel c * mult + m, as Keras orders them
        dw = np.moveaxis(dk, (n, n + 1), (0, 1)).reshape(cin * mult, 1, *k)

        def make_dw():
            m = conv_cls(cin, cin * mult, k, stride=s, padding=pad, dilation=d, groups=cin,
                         bias=kind.startswith("Depthwise") and layer.bias is not None)
            _set(m.weight, dw)
            if kind.startswith("Depthwise") and layer.bias is not None:
                _set(m.bias, layer.bias.numpy())
            return m
        y = w.emit(f"{w.module(layer, make_dw)}({x.var})", x.rank, "cf")
        if kind.startswith("Separable"):
            pk = layer.pointwise_kernel.numpy()

            def make_pw():
                m = conv_cls(cin * mult, int(cfg["filters"]), 1, bias=layer.bias is not None)
                _set(m.weight, np.transpose(pk, to_torch))
                if layer.bias is not None:
                    _set(m.bias, layer.bias.numpy())
                return m
            y = w.emit(f"{w.module(layer, make_pw, '_pointwise')}({y.var})", x.rank, "cf")
        return w.activation(y, cfg["activation"])

    groups = int(cfg.get("groups", 1))

    def make():
        m = conv_cls(cin, int(cfg["filters"]), k, stride=s, padding=pad, dilation=d, groups=groups,
                     bias=layer.bias is not None)
        _set(m.weight, np.transpose(layer.kernel.numpy(), to_torch))
        if layer.bias is not None:
            _set(m.bias, layer.bias.numpy())
        return m
    return w.activation(w.emit(f"{w.module(layer, make)}({x.var})", x.rank, "cf"), cfg["activation"])


def _emit_pool(w: _Writer, layer, kind: str, cfg: dict, x: _Value, in_shape) -> _Value:
    nn = w.nn
    n = 1 if kind.endswith("1D") else 2
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise TwinError(f"layer {layer.name!r}: data_format={cfg['data_format']!r} has no PyTorch twin here")
    k = _tuple(cfg["pool_size"], n)
    s = _tuple(cfg["strides"] if cfg.get("strides") is not None else cfg["pool_size"], n)
    is_max = kind.startswith("Max")
    x = w.layout(x, "cf")
    pad: Any = 0
    ceil = False
    if cfg.get("padding", "valid") == "same":
        spatial = list(in_shape[1:1 + n])
        if any(v is None for v in spatial):
            if not is_max:
                raise TwinError(f"layer {layer.name!r}: 'same' average pooling over free dims has no PyTorch "
                                "twin here")
            x = w.emit(f"pad_same({x.var}, {k}, {s}, {(1,) * n}, float('-inf'))", x.rank, "cf")
            spatial = []
        pads = [] if not spatial else [_same_pads(size, kk, ss, 1) for size, kk, ss in zip(spatial, k, s)]
        # Windows start at -before; ceil_mode lets the last one run past the end, and PyTorch's
        # count_include_pad=False divides by the elements inside, as Keras's "same" does.
        pad = tuple(a for a, _ in pads) if pads else 0
        ceil = any(a != b for a, b in pads)
        for size, kk, ss, (a, _) in zip(spatial, k, s, pads):
            expect = -(-size // ss)
            got = (math.ceil if ceil else math.floor)((size + 2 * a - kk) / ss) + 1
            if got != expect or a > kk // 2:
                raise TwinError(f"layer {layer.name!r}: 'same' pooling {k}/{s} on {spatial} has no PyTorch twin")
    cls = {(True, 1): nn.MaxPool1d, (True, 2): nn.MaxPool2d, (False, 1): nn.AvgPool1d, (False, 2): nn.AvgPool2d}
    extra = {} if is_max else {"count_include_pad": False}

    def make():
        return cls[is_max, n](k, stride=s, padding=pad, ceil_mode=ceil, **extra)
    return w.emit(f"{w.module(layer, make)}({x.var})", x.rank, "cf")


def _emit_lstm(w: _Writer, layer, cfg: dict, x: _Value) -> _Value:
    nn = w.nn
    if (cfg["activation"], cfg["recurrent_activation"]) != ("tanh", "sigmoid") or cfg.get("go_backwards") \
            or cfg.get("return_state") or cfg.get("stateful"):
        raise TwinError(f"layer {layer.name!r}: this LSTM configuration has no PyTorch twin here")
    x = w.layout(x, "cl")
    units = layer.units

    def make():
        kernel = layer.kernel.numpy()
        m = nn.LSTM(kernel.shape[0], units, batch_first=True, bias=layer.bias is not None)
        # Keras and PyTorch share the gate order (i, f, c/g, o); PyTorch keeps two biases.
        _set(m.weight_ih_l0, kernel.T)
        _set(m.weight_hh_l0, layer.recurrent_kernel.numpy().T)
        if layer.bias is not None:
            _set(m.bias_ih_l0, layer.bias.numpy())
            _set(m.bias_hh_l0, np.zeros(4 * units, np.float32))
        return m
    seq = w.emit(f"{w.module(layer, make)}({x.var})[0]", 3, "cl")
    if cfg.get("return_sequences"):
        return seq
    return w.emit(f"{seq.var}[:, -1]", 2, "cl")


__all__ = ["TorchTwin", "TwinError", "torch_twin", "pad_same"]
