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
from graphc.training import schedules

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "Nadam", "Lion", "Ftrl",
           "schedules", "get", "serialize", "deserialize", "ParamUpdate"]


ACCUMULATOR = "gradient_accumulator"  # the slot of a weight's gradient sum (Keras's variable name)


@dataclass
class ParamUpdate:
    """One trained weight in a graph: its constant, its gradient value and its state key (the path)."""

    constant: str
    grad: str
    key: str


class Optimizer:
    """Base class: learning rate, iterations, slots, gradient clipping and weight decay."""

    _slot_names: tuple[str, ...] = ()
    _slot_initial: dict[str, float] = {}  # slots that do not start at zero (Adagrad's accumulator)

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {sorted(kwargs)}")
        if use_ema:
            raise ValueError(f"{type(self).__name__}(use_ema=True) is not supported by graphc")
        if gradient_accumulation_steps and not gradient_accumulation_steps >= 2:
            raise ValueError("`gradient_accumulation_steps` must be an integer >= 2. Received: "
                             f"gradient_accumulation_steps={gradient_accumulation_steps}")
        if gradient_accumulation_steps and int(gradient_accumulation_steps) != gradient_accumulation_steps:
            raise ValueError(f"{type(self).__name__}(gradient_accumulation_steps={gradient_accumulation_steps}): "
                             "graphc needs a whole number of steps")
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
        self.gradient_accumulation_steps = gradient_accumulation_steps or None
        self._iterations = 0  # batches seen: Keras's `_iterations` variable (what files store)
        self._learning_rate: Any = None
        self.learning_rate = learning_rate
        self.slots: dict[str, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ iterations
    @property
    def iterations(self) -> int:
        """Keras's ``iterations``: the updates applied. With gradient accumulation that is the batches seen
        (``_iterations``) divided by ``gradient_accumulation_steps``; without, every batch is an update."""
        steps = self.gradient_accumulation_steps
        return self._iterations // steps if steps else self._iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        """``value`` updates applied (with gradient accumulation: and an empty accumulation window)."""
        self._iterations = int(value) * (self.gradient_accumulation_steps or 1)

    # ------------------------------------------------------------------ learning rate
    @property
    def learning_rate(self) -> float:
        """The current learning rate (a schedule is evaluated at the batches seen, ``_iterations``, as in
        Keras: with gradient accumulation, schedules count batches, not updates)."""
        lr = self._learning_rate
        if callable(lr):
            return float(np.float32(lr(self._iterations)))
        return float(lr)

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if isinstance(value, dict) and "class_name" in value:
            value = schedules.deserialize(value)
        if callable(value):
            self._learning_rate = value
            return
        if self._learning_rate is not None and callable(self._learning_rate):
            raise TypeError(f"This optimizer was created with a `LearningRateSchedule` object "
                            f"({self._learning_rate!r}) as its `learning_rate` constructor argument, hence its "
                            "learning rate is not settable. If you need the learning rate to be settable, instantiate "
                            "the optimizer with a float `learning_rate` argument.")
        try:
            self._learning_rate = np.float32(value)
        except (TypeError, ValueError):
            raise ValueError(f"Argument `learning_rate` should be float, or a schedule; received {value!r}") from None

    # ------------------------------------------------------------------ state
    def slot(self, key: str, slot: str, like: np.ndarray) -> np.ndarray:
        """The current array of slot ``slot`` of the weight ``key`` (zeros the first time)."""
        per = self.slots.setdefault(key, {})
        if slot not in per:
            per[slot] = np.full_like(like, self._slot_initial.get(slot, 0.0))
        return per[slot]

    @property
    def variables(self) -> list[np.ndarray]:
        """Iterations (batches seen), learning rate, the gradient accumulators and every slot, in Keras's order
        (slot by slot, weight by weight)."""
        out: list[np.ndarray] = [np.asarray(self._iterations, dtype=np.int64), np.float32(self.learning_rate)]
        accumulators = (ACCUMULATOR,) if self.gradient_accumulation_steps else ()
        for slot in accumulators + self._slot_names:
            for per in self.slots.values():
                if slot in per:
                    out.append(per[slot])
        return out

    def reset(self) -> None:
        self._iterations = 0
        self.slots.clear()

    # ------------------------------------------------------------------ graph emission
    def emit_updates(self, b: OpBuilder, params: list[ParamUpdate], weights: dict[str, np.ndarray], lr: str,
                     iterations: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """Emit one optimizer step; returns ({constant: new value}, {slot constant: (key, slot)}).

        ``weights`` maps each constant to its current array (for slot shapes), ``lr`` is the float32
        learning-rate input and ``iterations`` the int64 constant counting the batches seen.

        With ``gradient_accumulation_steps`` (Keras's semantics) each batch adds its gradient to the weight's
        ``gradient_accumulator`` slot; on every ``steps``-th batch the mean of the window's gradients is
        clipped and applied (weight decay included) and the accumulators restart from zero, while on the
        other batches weights and slots keep their values. The update's step count (Adam's bias correction)
        counts updates, ``iterations // steps``; the learning rate is fed for the batch.
        """
        self._b = b
        self._slot_consts: dict[str, tuple[str, str]] = {}
        self._scalars: dict[tuple, str] = {}
        self._weights = weights
        self._pending: dict[str, str] = {}
        grads = [p.grad for p in params]
        one = self._const(1, "int64")
        steps = self.gradient_accumulation_steps
        if steps:
            applied, is_update = self._accumulation_window(iterations, int(steps))
            local_step = b.cast(b.add(applied, one), dtype="float32")
            accumulators = [self._slot_const(p, ACCUMULATOR) for p in params]
            sums = [b.add(g, acc) for g, acc in zip(grads, accumulators)]
            restarted = {acc: b.where(is_update, self._const(0.0, b.graph.type_of(acc).dtype), total)
                         for acc, total in zip(accumulators, sums)}
            grads = [b.div(total, self._const(steps, b.graph.type_of(total).dtype)) for total in sums]
        else:
            local_step = b.cast(b.add(iterations, one), dtype="float32")
        grads = self._clip(grads)
        updates: dict[str, str] = {}
        for p, g in zip(params, grads):
            dtype = b.graph.type_of(p.constant).dtype
            lr_p = lr if dtype == "float32" else b.cast(lr, dtype=dtype)
            var = p.constant
            if self.weight_decay is not None and self._decays(p):
                var = b.mul(var, b.sub(self._const(1.0, dtype),
                                       b.mul(lr_p, self._const(self.weight_decay, dtype))))
            updates[p.constant] = self.update_step(g, var, lr_p, local_step, p)
        updates.update(self._pending)
        if steps:  # weights and slots move on update batches only; the accumulators on every batch
            updates = {const: b.where(is_update, value, const) for const, value in updates.items()}
            updates.update(restarted)
        updates[iterations] = b.add(iterations, one)
        return updates, self._slot_consts

    def _accumulation_window(self, iterations: str, steps: int) -> tuple[str, str]:
        """(updates applied before this batch, whether this batch applies one) from the batches seen.

        ``iterations // steps`` is a float32 quotient truncated to int64: exact below 2**24 batches, where
        the float32 step count of the updates is exact too."""
        b = self._b
        quotient = b.div(b.cast(iterations, dtype="float32"), self._const(steps, "float32"))
        applied = b.cast(quotient, dtype="int64")
        position = b.sub(iterations, b.mul(applied, self._const(steps, "int64")))
        return applied, b.equal(position, self._const(steps - 1, "int64"))

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

    def _shared_slot_const(self, slot: str, initial: float) -> str:
        """A float32 scalar of optimizer state shared by every weight (Nadam's running product), keyed ``""``."""
        per = self.slots.setdefault("", {})
        if slot not in per:
            per[slot] = np.asarray(initial, dtype=np.float32)
        name = self._b.graph.unique_name(f"{self.name}/{slot}")
        self._b.graph.add_constant(name, per[slot])
        self._slot_consts[name] = ("", slot)
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
        if isinstance(lr, schedules.LearningRateSchedule):
            lr = schedules.serialize(lr)
        return {"name": self.name, "learning_rate": lr if callable(lr) or isinstance(lr, dict) else float(lr),
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
    """Optimizers whose update writes slots (through ``_set``): the new slot values are state updates too."""


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


def _sign(b: OpBuilder, x: str, dtype: str) -> str:
    """sign(x) as 1, -1 or 0 (exact: the difference of two comparisons)."""
    zero = b.constant(np.asarray(0.0, dtype=dtype), "zero")
    return b.sub(b.cast(b.greater(x, zero), dtype=dtype), b.cast(b.less(x, zero), dtype=dtype))


class Adagrad(_SlotUpdates):
    """``a += g^2``; ``w -= lr*g / sqrt(a + eps)`` (``a`` starts at ``initial_accumulator_value``)."""

    _slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon
        self._slot_initial = {"accumulator": float(initial_accumulator_value)}

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        a = self._slot_const(p, "accumulator")
        new_a = b.add(a, b.mul(grad, grad))
        self._set(a, new_a)
        return b.sub(var, b.div(b.mul(grad, lr), b.sqrt(b.add(new_a, self._const(self.epsilon, dtype)))))

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class Adadelta(_SlotUpdates):
    """``g2 = rho*g2 + (1-rho)*g^2``; ``d = -sqrt(d2 + eps)*g / sqrt(g2 + eps)``; ``d2 = rho*d2 + (1-rho)*d^2``;
    ``w += lr*d``."""

    _slot_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="adadelta", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        eps, rho, one_minus = (self._const(v, dtype) for v in (self.epsilon, self.rho, 1 - self.rho))
        g2 = self._slot_const(p, "accumulated_grad")
        d2 = self._slot_const(p, "accumulated_delta_var")
        new_g2 = b.add(b.mul(g2, rho), b.mul(b.mul(grad, grad), one_minus))
        delta = b.neg(b.div(b.mul(b.sqrt(b.add(d2, eps)), grad), b.sqrt(b.add(new_g2, eps))))
        self._set(g2, new_g2)
        self._set(d2, b.add(b.mul(d2, rho), b.mul(b.mul(delta, delta), one_minus)))
        return b.add(var, b.mul(delta, lr))

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adamax(_SlotUpdates):
    """``m = b1*m + (1-b1)*g``; ``u = max(b2*u, |g|)``; ``w -= lr*m / ((u + eps)*(1 - b1^t))``."""

    _slot_names = ("momentum", "norm")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamax", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        step = local_step if dtype == "float32" else b.cast(local_step, dtype=dtype)
        b1_power = b.pow(self._const(self.beta_1, dtype), step)
        m = self._slot_const(p, "momentum")
        u = self._slot_const(p, "norm")
        new_m = b.add(b.mul(m, self._const(self.beta_1, dtype)), b.mul(grad, self._const(1 - self.beta_1, dtype)))
        new_u = b.maximum(b.mul(u, self._const(self.beta_2, dtype)), b.abs(grad))
        self._set(m, new_m)
        self._set(u, new_u)
        denominator = b.mul(b.add(new_u, self._const(self.epsilon, dtype)), b.sub(self._const(1.0, dtype), b1_power))
        return b.sub(var, b.div(b.mul(new_m, lr), denominator))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Nadam(_SlotUpdates):
    """Adam with Nesterov momentum and Keras's momentum schedule ``u_t = b1*(1 - 0.5*0.96^t)``; the running
    product of the ``u_t`` is optimizer state shared by all weights."""

    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="nadam", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def emit_updates(self, b, params, weights, lr, iterations):
        self._schedule: dict[str, tuple[str, str, str, str]] = {}
        return super().emit_updates(b, params, weights, lr, iterations)

    def _momentum_schedule(self, local_step: str, dtype: str) -> tuple[str, str, str, str]:
        """(u_t, u_{t+1}, prod u_1..u_t, prod u_1..u_{t+1}) for this step, emitted once per dtype."""
        if dtype not in self._schedule:
            b = self._b
            step = local_step if dtype == "float32" else b.cast(local_step, dtype=dtype)
            one, half, decay, beta_1 = (self._const(v, dtype) for v in (1.0, 0.5, 0.96, self.beta_1))
            u_t = b.mul(beta_1, b.sub(one, b.mul(half, b.pow(decay, step))))
            u_t_1 = b.mul(beta_1, b.sub(one, b.mul(half, b.pow(decay, b.add(step, one)))))
            first = not self._schedule
            if first:
                self._product = self._shared_slot_const("u_product", 1.0)
            product = self._product
            product_t = b.mul(product if dtype == "float32" else b.cast(product, dtype=dtype), u_t)
            if first:  # the state update: the product through this step
                self._set(product, product_t if dtype == "float32" else b.cast(product_t, dtype="float32"))
            self._schedule[dtype] = (u_t, u_t_1, product_t, b.mul(product_t, u_t_1))
        return self._schedule[dtype]

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        one = self._const(1.0, dtype)
        u_t, u_t_1, product_t, product_t_1 = self._momentum_schedule(local_step, dtype)
        step = local_step if dtype == "float32" else b.cast(local_step, dtype=dtype)
        b2_power = b.pow(self._const(self.beta_2, dtype), step)
        m = self._slot_const(p, "momentum")
        v = self._slot_const(p, "velocity")
        new_m = b.add(b.mul(m, self._const(self.beta_1, dtype)), b.mul(grad, self._const(1 - self.beta_1, dtype)))
        new_v = b.add(b.mul(v, self._const(self.beta_2, dtype)),
                      b.mul(b.mul(grad, grad), self._const(1 - self.beta_2, dtype)))
        self._set(m, new_m)
        self._set(v, new_v)
        m_hat = b.add(b.div(b.mul(new_m, u_t_1), b.sub(one, product_t_1)),
                      b.div(b.mul(grad, b.sub(one, u_t)), b.sub(one, product_t)))
        v_hat = b.div(new_v, b.sub(one, b2_power))
        return b.sub(var, b.div(b.mul(m_hat, lr), b.add(b.sqrt(v_hat), self._const(self.epsilon, dtype))))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Lion(_SlotUpdates):
    """``w -= lr*sign(b1*m + (1-b1)*g)``; then ``m = b2*m + (1-b2)*g``."""

    _slot_names = ("momentum",)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="lion", **kwargs):
        if beta_1 <= 0 or beta_1 > 1:
            raise ValueError("Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer degenerates "
                             f"to SignSGD. Received: beta_1={beta_1}.")
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        m = self._slot_const(p, "momentum")
        c = b.add(b.mul(m, self._const(self.beta_1, dtype)), b.mul(grad, self._const(1 - self.beta_1, dtype)))
        self._set(m, b.add(b.mul(m, self._const(self.beta_2, dtype)), b.mul(grad, self._const(1 - self.beta_2, dtype))))
        return b.sub(var, b.mul(_sign(b, c, dtype), lr))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


class Ftrl(_SlotUpdates):
    """Follow-the-regularized-leader (Keras's generic update): per-coordinate rates from the accumulated
    squared gradients, L1 and L2 (and shrinkage) regularization in closed form."""

    _slot_names = ("accumulator", "linear")

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="ftrl", **kwargs):
        for arg, value, what in (("initial_accumulator_value", initial_accumulator_value, "positive or zero"),
                                 ("learning_rate_power", -learning_rate_power, "negative or zero"),
                                 ("l1_regularization_strength", l1_regularization_strength, "positive or zero"),
                                 ("l2_regularization_strength", l2_regularization_strength, "positive or zero"),
                                 ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength,
                                  "positive or zero")):
            if value < 0.0:
                shown = -value if arg == "learning_rate_power" else value
                raise ValueError(f"`{arg}` needs to be {what}. Received: {arg}={shown}.")
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.learning_rate_power = learning_rate_power
        self.initial_accumulator_value = initial_accumulator_value
        self.l1_regularization_strength = l1_regularization_strength
        self.l2_regularization_strength = l2_regularization_strength
        self.l2_shrinkage_regularization_strength = l2_shrinkage_regularization_strength
        self.beta = beta
        self._slot_initial = {"accumulator": float(initial_accumulator_value)}

    def update_step(self, grad, var, lr, local_step, p):
        b = self._b
        dtype = b.graph.type_of(var).dtype
        c = lambda v: self._const(v, dtype)  # noqa: E731
        accum = self._slot_const(p, "accumulator")
        linear = self._slot_const(p, "linear")
        power = c(-self.learning_rate_power)
        l2_reg = b.add(c(self.l2_regularization_strength), b.div(c(self.beta), b.mul(c(2.0), lr)))
        grad_to_use = b.add(grad, b.mul(c(2 * self.l2_shrinkage_regularization_strength), var))
        new_accum = b.add(accum, b.square(grad))
        new_accum_power = b.pow(new_accum, power)
        sigma = b.div(b.sub(new_accum_power, b.pow(accum, power)), lr)
        new_linear = b.add(linear, b.sub(grad_to_use, b.mul(sigma, var)))
        quadratic = b.add(b.div(new_accum_power, lr), b.mul(c(2.0), l2_reg))
        l1 = float(self.l1_regularization_strength)
        clipped = b.clip(new_linear, min=-l1, max=l1)
        self._set(linear, new_linear)
        self._set(accum, new_accum)
        return b.div(b.sub(clipped, new_linear), quadratic)

    def get_config(self):
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}


_CLASSES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad,
            "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam, "lion": Lion, "ftrl": Ftrl}


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
    return _CLASSES[name].from_config(cfg)
