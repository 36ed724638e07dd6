"""Keras 3 optimizers (SGD, RMSprop, Adam, AdamW) as IR ops: the update half of a training step.

An optimizer owns its state on the host: ``iterations`` and, per trained weight (keyed by the
weight's path), its slot arrays (``velocity``, ``momentum``...). ``emit_updates`` writes the
update rule into a graph: every slot becomes a graph constant holding the current array, the
learning rate is a scalar graph input, and the step's new values are returned as
``{constant: new value}``; the training loop writes them back after each step. The formulas
and their order of operations follow Keras 3's torch backend (for instance RMSprop divides
``g * lr`` by ``sqrt(velocity + epsilon)``; Adam folds both bias corrections into its step size),
so a graphc step and a Keras step agree to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.ops.builder import OpBuilder

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "get", "serialize", "deserialize", "ParamUpdate"]


@dataclass
class ParamUpdate:
    """One trained weight in a graph: its constant, its gradient value and its state key (the path)."""

    constant: str
    grad: str
    key: str


class Optimizer:
    """Base class: learning rate, iterations, slots, gradient clipping and weight decay."""

    _slot_names: tuple[str, ...] = ()

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {sorted(kwargs)}")
        if use_ema:
            raise ValueError(f"{type(self).__name__}(use_ema=True) is not supported by graphc")
        if gradient_accumulation_steps:
            raise ValueError(f"{type(self).__name__}(gradient_accumulation_steps=...) is not supported by graphc")
        if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        from graphc.frontend.state import to_snake_case

        self.name = name or to_snake_case(type(self).__name__)
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.use_ema = False
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = loss_scale_factor
        self.gradient_accumulation_steps = None
        self.iterations = 0
        self._learning_rate: Any = None
        self.learning_rate = learning_rate
        self.slots: dict[str, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ learning rate
    @property
    def learning_rate(self) -> float:
        """The current learning rate (a schedule is evaluated at ``iterations``)."""
        lr = self._learning_rate
        if callable(lr):
            return float(np.float32(lr(self.iterations)))
        return float(lr)

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if callable(value):
            self._learning_rate = value
            return
        if self._learning_rate is not None and callable(self._learning_rate):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its "
                            "`learning_rate` constructor argument, hence its learning rate is not settable.")
        try:
            self._learning_rate = np.float32(value)
        except (TypeError, ValueError):
            raise ValueError(f"Argument `learning_rate` should be float, or a schedule; received {value!r}") from None

    # ------------------------------------------------------------------ state
    def slot(self, key: str, slot: str, like: np.ndarray) -> np.ndarray:
        """The current array of slot ``slot`` of the weight ``key`` (zeros the first time)."""
        per = self.slots.setdefault(key, {})
        if slot not in per:
            per[slot] = np.zeros_like(like)
        return per[slot]

    @property
    def variables(self) -> list[np.ndarray]:
        """Iterations, learning rate and every slot, in Keras's order (slot by slot, weight by weight)."""
        out: list[np.ndarray] = [np.asarray(self.iterations, dtype=np.int64), np.float32(self.learning_rate)]
        for slot in self._slot_names:
            for per in self.slots.values():
                if slot in per:
                    out.append(per[slot])
        return out

    def reset(self) -> None:
        self.iterations = 0
        self.slots.clear()

    # ------------------------------------------------------------------ graph emission
    def emit_updates(self, b: OpBuilder, params: list[ParamUpdate], weights: dict[str, np.ndarray], lr: str,
                     iterations: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """Emit one optimizer step; returns ({constant: new value}, {slot constant: (key, slot)}).

        ``weights`` maps each constant to its current array (for slot shapes), ``lr`` is the float32
        learning-rate input and ``iterations`` the int64 iteration-count constant.
        """
        self._b = b
        self._slot_consts: dict[str, tuple[str, str]] = {}
        self._scalars: dict[tuple, str] = {}
        self._weights = weights
        grads = self._clip([p.grad for p in params])
        updates: dict[str, str] = {}
        local_step = b.cast(b.add(iterations, self._const(1, "int64")), dtype="float32")
        for p, g in zip(params, grads):
            dtype = b.graph.type_of(p.constant).dtype
            lr_p = lr if dtype == "float32" else b.cast(lr, dtype=dtype)
            var = p.constant
            if self.weight_decay is not None and self._decays(p):
                var = b.mul(var, b.sub(self._const(1.0, dtype),
                                       b.mul(lr_p, self._const(self.weight_decay, dtype))))
            updates[p.constant] = self.update_step(g, var, lr_p, local_step, p)
        updates[iterations] = b.add(iterations, self._const(1, "int64"))
        return updates, self._slot_consts

    def _decays(self, p: ParamUpdate) -> bool:
        return True

    def _const(self, value, dtype: str) -> str:
        key = (float(value), dtype)
        if key not in self._scalars:
            self._scalars[key] = self._b.constant(np.asarray(value, dtype=dtype), f"{self.name}/const")
        return self._scalars[key]

    def _slot_const(self, p: ParamUpdate, slot: str) -> str:
        """The graph constant holding ``slot`` of weight ``p`` (its current array)."""
        array = self.slot(p.key, slot, self._weights[p.constant])
        name = self._b.graph.unique_name(f"{self.name}/{p.key}/{slot}")
        self._b.graph.add_constant(name, array)
        self._slot_consts[name] = (p.key, slot)
        return name

    def _clip(self, grads: list[str]) -> list[str]:
        b = self._b
        if self.clipvalue is not None:
            return [b.clip(g, min=-float(self.clipvalue), max=float(self.clipvalue)) for g in grads]
        if self.clipnorm is not None:
            out = []
            for g in grads:
                dtype = b.graph.type_of(g).dtype
                norm = b.sqrt(b.reduce_sum(b.square(g), axes=tuple(range(b.graph.type_of(g).rank))))
                c = self._const(self.clipnorm, dtype)
                out.append(b.div(b.mul(g, c), b.maximum(norm, c)))
            return out
        if self.global_clipnorm is not None:
            squares = [b.reduce_sum(b.square(g), axes=tuple(range(b.graph.type_of(g).rank))) for g in grads]
            total = squares[0] if len(squares) == 1 else b.add_n(*squares)
            dtype = b.graph.type_of(grads[0]).dtype
            c = self._const(self.global_clipnorm, dtype)
            scale = b.div(c, b.maximum(b.sqrt(total), c))
            return [b.mul(g, scale) for g in grads]
        return grads

    def update_step(self, grad: str, var: str, lr: str, local_step: str, p: ParamUpdate) -> str:
        """Emit the new value of ``var`` (and slot updates through ``self._set``)."""
        raise NotImplementedError

    def _set(self, slot_const: str, value: str) -> None:
        self._pending[slot_const] = value

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        lr = self._learning_rate
        return {"name": self.name, "learning_rate": lr if callable(lr) else float(lr),
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "clipvalue": self.clipvalue, "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "loss_scale_factor": self.loss_scale_factor,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}

    @classmethod
    def from_config(cls, config: dict) -> Optimizer:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, learning_rate={self.learning_rate}>"


class _SlotUpdates(Optimizer):
    """Optimizers whose update writes slots: the new slot values become state updates too."""

    def emit_updates(self, b, params, weights, lr, iterations):
        self._pending: dict[str, str] = {}
        updates, slots = super().emit_updates(b, params, weights, lr, iterations)
        updates.update(self._pending)
        return updates, slots


class SGD(_SlotUpdates):
    """``m = momentum*m - lr*g``; ``w += m`` (Nesterov: ``w += momentum*m - lr*g``); plain: ``w -= lr*g``."""

    _slot_names = ("momentum",)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        if not isinstance(momentum, (int, float)) or momentum < 0 or momentum > 1:
            raise ValueError("`momentum` must be a float between [0, 1].")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        if self.momentum == 0:
            return b.sub(var, b.mul(grad, lr))
        m = self._slot_const(p, "momentum")
        new_m = b.sub(b.mul(m, self._const(self.momentum, dtype)), b.mul(grad, lr))
        self._set(m, new_m)
        if self.nesterov:
            return b.add(b.sub(var, b.mul(grad, lr)), b.mul(new_m, self._const(self.momentum, dtype)))
        return b.add(var, new_m)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(_SlotUpdates):
    """``v = rho*v + (1-rho)*g^2``; ``w -= lr*g / sqrt(v + eps)`` (centered: ``v - a^2``; with momentum)."""

    _slot_names = ("velocity", "momentum", "average_gradient")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        v = self._slot_const(p, "velocity")
        new_v = b.add(b.mul(v, self._const(self.rho, dtype)),
                      b.mul(b.mul(grad, grad), self._const(1 - self.rho, dtype)))
        self._set(v, new_v)
        denominator = b.add(new_v, self._const(self.epsilon, dtype))
        if self.centered:
            a = self._slot_const(p, "average_gradient")
            new_a = b.add(b.mul(a, self._const(self.rho, dtype)), b.mul(grad, self._const(1 - self.rho, dtype)))
            self._set(a, new_a)
            denominator = b.sub(denominator, b.mul(new_a, new_a))
        increment = b.div(b.mul(grad, lr), b.sqrt(denominator))
        if self.momentum > 0:
            m = self._slot_const(p, "momentum")
            new_m = b.add(b.mul(m, self._const(self.momentum, dtype)), increment)
            self._set(m, new_m)
            return b.sub(var, new_m)
        return b.sub(var, increment)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adam(_SlotUpdates):
    """``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``, ``w -= m*alpha / (sqrt(v) + eps)`` with
    ``alpha = lr*sqrt(1 - b2^t)/(1 - b1^t)`` (amsgrad: the running maximum of ``v``)."""

    _slot_names = ("momentum", "velocity", "velocity_hat")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adam", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        step = local_step if dtype == "float32" else b.cast(local_step, dtype=dtype)
        one = self._const(1.0, dtype)
        b1_power = b.pow(self._const(self.beta_1, dtype), step)
        b2_power = b.pow(self._const(self.beta_2, dtype), step)
        alpha = b.div(b.mul(lr, b.sqrt(b.sub(one, b2_power))), b.sub(one, b1_power))
        m = self._slot_const(p, "momentum")
        v = self._slot_const(p, "velocity")
        new_m = b.add(b.mul(m, self._const(self.beta_1, dtype)), b.mul(grad, self._const(1 - self.beta_1, dtype)))
        new_v = b.add(b.mul(v, self._const(self.beta_2, dtype)),
                      b.mul(b.mul(grad, grad), self._const(1 - self.beta_2, dtype)))
        self._set(m, new_m)
        self._set(v, new_v)
        if self.amsgrad:
            vh = self._slot_const(p, "velocity_hat")
            new_v = b.maximum(vh, new_v)
            self._set(vh, new_v)
        return b.sub(var, b.div(b.mul(new_m, alpha), b.add(b.sqrt(new_v), self._const(self.epsilon, dtype))))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay: ``w *= 1 - weight_decay*lr`` before the Adam step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamw", **kwargs):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name, **kwargs)


_CLASSES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get(identifier: Any) -> Optimizer:
    """An Optimizer from a name ("rmsprop", "sgd", "adam", "adamw"), a config dict or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _CLASSES.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier!r}; graphc knows {', '.join(sorted(_CLASSES))}")
        return cls()
    raise ValueError(f"cannot interpret {identifier!r} as an optimizer")


def serialize(optimizer: Optimizer) -> dict:
    return {"module": "keras.optimizers", "class_name": type(optimizer).__name__, "config": optimizer.get_config(),
            "registered_name": None}


def deserialize(config: dict) -> Optimizer:
    name = str(config.get("class_name", "")).lower()
    if name not in _CLASSES:
        raise ValueError(f"unknown optimizer class {config.get('class_name')!r}")
    cfg = {k: v for k, v in dict(config.get("config") or {}).items() if k not in ("is_legacy_optimizer",)}
    if isinstance(cfg.get("learning_rate"), dict):
        raise ValueError("learning-rate schedules in optimizer configs are not supported by graphc")
    return _CLASSES[name].from_config(cfg)
