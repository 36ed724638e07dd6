"""PyTorch twins of graphc models: plain ``torch.nn`` modules with the same weights, for benchmarks.

:func:`torch_twin` walks a graphc Model's layer calls and writes the ``forward`` a PyTorch user
would write by hand: one ``nn.Linear`` / ``nn.Conv2d`` / ``nn.LSTM``... per layer, activations
as ``torch.relu``..., in PyTorch's own layout (images NCHW, Conv1D inputs NCW, sequences for
``nn.LSTM`` batch-first). The forward is straight-line generated source (as ``torch.fx`` does),
so calling the twin costs what a hand-written module costs. Image inputs are handed over in
NCHW and outputs come back in PyTorch's layout; :meth:`TorchTwin.to_torch` and
:meth:`TorchTwin.to_numpy` convert once, outside any timing.

Keras's "same" padding is TF-style (the extra row goes after): where it is asymmetric the
twin pads explicitly, as a PyTorch user matching Keras numbers would. Layers without a twin
here (GRU, SimpleRNN, TimeDistributed, 3-D convolutions...) raise :class:`TwinError` naming them.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
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
    "softsign": "F.softsign({x})", "exponential": "torch.exp({x})",
}


class _Value:
    """A tensor of the generated forward: its variable, rank and layout ("cl" as Keras, "cf" channels-first)."""

    def __init__(self, var: str, rank: int, layout: str):
        self.var, self.rank, self.layout = var, rank, layout


class _Writer:
    """Collects the twin's modules and the statements of its forward."""

    def __init__(self, torch_mod, nn):
        self.torch, self.nn = torch_mod, nn
        self.modules: dict[str, Any] = {}
        self.lines: list[str] = []
        self.by_layer: dict[tuple[int, str], str] = {}
        self.count = 0

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def emit(self, expr: str, rank: int, layout: str) -> _Value:
        v = self.var()
        self.lines.append(f"{v} = {expr}")
        return _Value(v, rank, layout)

    def module(self, layer, make, part: str = "") -> str:
        """The attribute holding ``layer``'s module (``part``: a second one); made once, so shared layers share it."""
        key = (id(layer), part)
        if key not in self.by_layer:
            name = "m_" + "".join(c if c.isalnum() else "_" for c in layer.name + part)
            while name in self.modules:
                name += "_"
            self.modules[name] = make()
            self.by_layer[key] = name
        return f"self.{self.by_layer[key]}"

    def layout(self, v: _Value, want: str) -> _Value:
        """``v`` in layout ``want`` (a permute where the layouts differ; rank < 3 has no layout)."""
        if v.rank < 3 or v.layout == want:
            return v
        if v.rank == 3:
            return self.emit(f"{v.var}.transpose(1, 2)", 3, want)
        order = (0, v.rank - 1, *range(1, v.rank - 1)) if want == "cf" else (0, *range(2, v.rank), 1)
        return self.emit(f"{v.var}.permute{order}", v.rank, want)

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

    w = _Writer(torch, nn)
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
            inner = {id(t): v for t, v in zip(layer.inputs, ins)}
            _emit_model(w, layer, inner, model_cls)
            for t, inner_t in zip(node.output_tensors, layer.outputs):
                env[id(t)] = inner[id(inner_t)]
            continue
        outs = _emit_layer(w, layer, ins, node)
        for t, v in zip(node.output_tensors, outs):
            env[id(t)] = v


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


def _emit_layer(w: _Writer, layer, ins: list[_Value], node) -> list[_Value]:
    nn = w.nn
    kind = type(layer).__name__
    cfg = layer.get_config()
    in_shape = node.input_tensors[0].shape if node.input_tensors else None
    x = ins[0] if ins else None

    if kind in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                "ActivityRegularization"):
        return [x]
    if kind == "Activation":
        return [w.activation(x, cfg["activation"])]
    if kind == "Dense":
        x = w.layout(x, "cl")

        def make():
            m = nn.Linear(layer.kernel.shape[0], layer.units, bias=layer.bias is not None)
            _set(m.weight, layer.kernel.numpy().T)
            if layer.bias is not None:
                _set(m.bias, layer.bias.numpy())
            return m
        return [w.activation(w.emit(f"{w.module(layer, make)}({x.var})", x.rank, "cl"), cfg["activation"])]
    if kind in ("Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"):
        return [_emit_conv(w, layer, kind, cfg, x, in_shape)]
    if kind in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        return [_emit_pool(w, layer, kind, cfg, x, in_shape)]
    if kind.startswith("Global") and kind[-2:] in ("1D", "2D"):
        dims = tuple(range(2, x.rank)) if x.layout == "cf" else tuple(range(1, x.rank - 1))
        op = "amax" if "Max" in kind else "mean"
        keep = bool(cfg.get("keepdims", False))
        return [w.emit(f"{x.var}.{op}(dim={dims}{', keepdim=True' if keep else ''})", x.rank if keep else 2,
                       x.layout)]
    if kind == "Flatten":
        x = w.layout(x, "cl")
        return [w.emit(f"{x.var}.flatten(1)", 2, "cl")]
    if kind == "Reshape":
        x = w.layout(x, "cl")
        target = tuple(cfg["target_shape"])
        return [w.emit(f"{x.var}.reshape({x.var}.shape[0], *{target})", len(target) + 1, "cl")]
    if kind == "Embedding":
        def make():
            m = nn.Embedding(layer.input_dim, layer.output_dim)
            _set(m.weight, layer.embeddings.numpy())
            return m
        return [w.emit(f"{w.module(layer, make)}({x.var})", x.rank + 1, "cl")]
    if kind == "LSTM":
        return [_emit_lstm(w, layer, cfg, x)]
    if kind == "BatchNormalization":
        axis = cfg["axis"][0] if isinstance(cfg["axis"], (list, tuple)) else cfg["axis"]
        if axis % x.rank != x.rank - 1:
            raise TwinError(f"layer {layer.name!r}: BatchNormalization(axis={axis}) has no PyTorch twin here")
        x = w.layout(x, "cf") if x.rank >= 3 else x

        def make():
            c = layer.moving_mean.shape[0]
            cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[x.rank]
            # Keras's momentum weighs the old moving statistic, PyTorch's the batch's
            m = cls(c, eps=cfg["epsilon"], momentum=1.0 - cfg["momentum"], affine=True)
            _set(m.weight, layer.gamma.numpy() if layer.gamma is not None else np.ones(c))
            _set(m.bias, layer.beta.numpy() if layer.beta is not None else np.zeros(c))
            _set(m.running_mean, layer.moving_mean.numpy())
            _set(m.running_var, layer.moving_variance.numpy())
            return m
        return [w.emit(f"{w.module(layer, make)}({x.var})", x.rank, x.layout)]
    if kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        vs = [w.layout(v, ins[0].layout) for v in ins]
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
        rank = max(v.rank for v in vs)
        return [w.emit(expr, rank, vs[0].layout)]
    if kind == "Concatenate":
        vs = [w.layout(v, ins[0].layout) for v in ins]
        dim = w.dim(vs[0], cfg["axis"])
        return [w.emit(f"torch.cat([{', '.join(v.var for v in vs)}], dim={dim})", vs[0].rank, vs[0].layout)]
    if kind == "Dot":
        axes = cfg["axes"]
        if any(v.rank != 2 for v in ins) or axes not in (1, -1, [1, 1], [-1, -1], (1, 1), (-1, -1)):
            raise TwinError(f"layer {layer.name!r}: Dot beyond two vectors has no PyTorch twin here")
        a, b = ins[0].var, ins[1].var
        if cfg.get("normalize"):
            a, b = f"F.normalize({a}, dim=1, eps=1e-12)", f"F.normalize({b}, dim=1, eps=1e-12)"
        return [w.emit(f"({a} * {b}).sum(dim=1, keepdim=True)", 2, "cl")]
    raise TwinError(f"layer {layer.name!r} ({kind}) has no PyTorch twin here")


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
