"""Keras 3 learning-rate schedules: the learning rate as a function of the optimizer's iteration count.

A schedule is called with the batches seen before the step (Keras's ``optimizer._iterations``) and
returns a float32 learning rate, computed in float32 with Keras's order of operations. Each schedule
also emits that formula as graph ops (:meth:`LearningRateSchedule.emit`) on the training step's
int64 iteration counter, so a step graph computes its own learning rate: the reference step, the
native library (a C program calling ``gc_instance_train_step``) and the exported ONNX step follow
the schedule without the host feeding it. ``serialize``/``deserialize`` use Keras's form
(``module: keras.optimizers.schedules``), so optimizer configs with schedules round-trip through
``.keras`` files.

The graph has no floor, ceil or cosine op: the schedules floor and ceil non-negative quotients by
truncating casts to int64, and compute the cosine of CosineDecay in float64 as a Taylor polynomial
(error below 1e-17 on its range) rounded to float32: the correctly rounded float32 cosine, which
Keras's backends compute to within one unit in the last place.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.ops.builder import OpBuilder

__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "CosineDecayRestarts",
           "InverseTimeDecay", "PolynomialDecay", "serialize", "deserialize", "in_graph"]

_f32 = np.float32
_SIN_TERMS = 11  # odd Taylor terms of sin: the 23rd-order remainder on [-pi/2, pi/2] is below 2e-18


def _c(b: OpBuilder, value, dtype: str = "float32") -> str:
    return b.constant(np.asarray(value, dtype=dtype), "learning_rate_schedule/const")


def _step_f32(b: OpBuilder, step: str) -> str:
    """The iteration counter as Keras casts it: to the float32 of the initial learning rate."""
    return b.cast(step, dtype="float32")


def _floor(b: OpBuilder, x: str) -> str:
    """``floor(x)`` of a non-negative float32 scalar (a truncating cast to int64 and back)."""
    return b.cast(b.cast(x, dtype="int64"), dtype="float32")


def _ceil(b: OpBuilder, x: str) -> str:
    """``ceil(x)`` of a non-negative float32 scalar."""
    t = _floor(b, x)
    return b.where(b.greater(x, t), b.add(t, _c(b, 1.0)), t)


def _cos(b: OpBuilder, x: str) -> str:
    """``cos(x)`` of a float32 scalar in [0, pi]: ``-sin(x - pi/2)`` by its Taylor polynomial in float64,
    rounded to float32."""
    y = b.sub(b.cast(x, dtype="float64"), _c(b, math.pi / 2, "float64"))
    z = b.mul(y, y)
    coefficients = [(-1) ** k / math.factorial(2 * k + 1) for k in range(_SIN_TERMS)]
    acc = _c(b, coefficients[-1], "float64")
    for coefficient in reversed(coefficients[:-1]):
        acc = b.add(b.mul(acc, z), _c(b, coefficient, "float64"))
    return b.cast(b.neg(b.mul(y, acc)), dtype="float32")


def _positive_decay_steps(decay_steps) -> None:
    if decay_steps <= 0:
        raise ValueError(f"Argument `decay_steps` must be > 0. Received: decay_steps={decay_steps}")


class LearningRateSchedule:
    """Base class: ``schedule(step)`` is the learning rate at iteration ``step``; ``emit`` writes the same
    formula into a graph."""

    def __call__(self, step) -> np.float32:
        raise NotImplementedError

    def emit(self, b: OpBuilder, step: str) -> str:
        """The float32 scalar learning rate at ``step`` (an int64 scalar value of ``b``'s graph)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> LearningRateSchedule:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_config()}>"


class ExponentialDecay(LearningRateSchedule):
    """``initial * decay_rate ** (step / decay_steps)`` (the exponent floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        _positive_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = _f32(step) / _f32(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _f32(self.initial_learning_rate) * np.power(_f32(self.decay_rate), p)

    def emit(self, b, step):
        p = b.div(_step_f32(b, step), _c(b, self.decay_steps))
        if self.staircase:
            p = _floor(b, p)
        return b.mul(_c(b, self.initial_learning_rate), b.pow(_c(b, self.decay_rate), p))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """``initial / (1 + decay_rate * step / decay_steps)`` (the ratio floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        _positive_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = _f32(step) / _f32(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _f32(self.initial_learning_rate) / (_f32(1) + _f32(self.decay_rate) * p)

    def emit(self, b, step):
        p = b.div(_step_f32(b, step), _c(b, self.decay_steps))
        if self.staircase:
            p = _floor(b, p)
        return b.div(_c(b, self.initial_learning_rate), b.add(_c(b, 1.0), b.mul(_c(b, self.decay_rate), p)))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` while ``boundaries[i-1] < step <= boundaries[i]``."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError("The length of boundaries should be 1 less than the length of values. Received: "
                             f"boundaries={boundaries} of length {len(boundaries)}, and values={values} of length "
                             f"{len(values)}.")
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def _step_boundaries(self) -> list[int]:
        """The boundaries cast to the iteration counter's integer type, as Keras compares them (truncated)."""
        return [int(x) if isinstance(x, (int, np.integer)) else int(np.float32(x)) for x in self.boundaries]

    def __call__(self, step):
        for boundary, value in zip(self._step_boundaries(), self.values):
            if step <= boundary:
                return _f32(value)
        return _f32(self.values[-1])

    def emit(self, b, step):
        dtype = b.graph.type_of(step).dtype
        rate = _c(b, self.values[-1])
        for boundary, value in reversed(list(zip(self._step_boundaries(), self.values))):
            rate = b.where(b.greater(step, _c(b, boundary, dtype)), rate, _c(b, value))
        return rate

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step/decay_steps) ** power + end`` (``cycle`` restarts at multiples)."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
                 name="PolynomialDecay"):
        _positive_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        self.name = name

    def __call__(self, step):
        step_f, decay_steps = _f32(step), _f32(self.decay_steps)
        if self.cycle:
            multiplier = _f32(1) if step_f == 0 else np.ceil(step_f / decay_steps)
            decay_steps = decay_steps * multiplier
        else:
            step_f = min(step_f, decay_steps)
        p = step_f / decay_steps
        initial, end = _f32(self.initial_learning_rate), _f32(self.end_learning_rate)
        return (initial - end) * np.power(_f32(1) - p, _f32(self.power)) + end

    def emit(self, b, step):
        step_f, decay_steps = _step_f32(b, step), _c(b, self.decay_steps)
        if self.cycle:
            multiplier = b.where(b.equal(step_f, _c(b, 0.0)), _c(b, 1.0), _ceil(b, b.div(step_f, decay_steps)))
            decay_steps = b.mul(decay_steps, multiplier)
        else:
            step_f = b.minimum(step_f, decay_steps)
        p = b.div(step_f, decay_steps)
        initial, end = _f32(self.initial_learning_rate), _f32(self.end_learning_rate)
        return b.add(b.mul(_c(b, initial - end), b.pow(b.sub(_c(b, 1.0), p), _c(b, self.power))), _c(b, end))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


class CosineDecay(LearningRateSchedule):
    """A linear warmup from ``initial`` to ``warmup_target`` over ``warmup_steps`` (when a target is given),
    then a cosine decay over ``decay_steps`` to ``alpha`` times the rate it starts from."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        _positive_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name
        self.warmup_target = warmup_target
        self.warmup_steps = warmup_steps

    def _decay(self, step, decay_steps, start):
        cosine = _f32(0.5) * (_f32(1) + np.cos(_f32(math.pi) * (step / decay_steps)))
        return start * (_f32(1 - self.alpha) * cosine + _f32(self.alpha))

    def _emit_decay(self, b: OpBuilder, step: str, decay_steps: str, start: str) -> str:
        cosine = b.mul(_c(b, 0.5), b.add(_c(b, 1.0), _cos(b, b.mul(_c(b, math.pi), b.div(step, decay_steps)))))
        return b.mul(start, b.add(b.mul(_c(b, 1 - self.alpha), cosine), _c(b, self.alpha)))

    def __call__(self, step):
        initial, decay_steps, step_f = _f32(self.initial_learning_rate), _f32(self.decay_steps), _f32(step)
        if self.warmup_target is None:
            return self._decay(min(step_f, decay_steps), decay_steps, initial)
        target, warmup_steps = _f32(self.warmup_target), _f32(self.warmup_steps)
        step_f = min(step_f, decay_steps + warmup_steps)
        if step_f < warmup_steps:
            return (target - initial) * (step_f / warmup_steps) + initial
        return self._decay(step_f - warmup_steps, decay_steps, target)

    def emit(self, b, step):
        initial, decay_steps, step_f = _c(b, self.initial_learning_rate), _c(b, self.decay_steps), _step_f32(b, step)
        if self.warmup_target is None:
            return self._emit_decay(b, b.minimum(step_f, decay_steps), decay_steps, initial)
        target, warmup_steps = _c(b, self.warmup_target), _c(b, self.warmup_steps)
        step_f = b.minimum(step_f, b.add(decay_steps, warmup_steps))
        delta = _c(b, _f32(self.warmup_target) - _f32(self.initial_learning_rate))
        warmup = b.add(b.mul(delta, b.div(step_f, warmup_steps)), initial)
        # both branches are computed; the decay's step is kept >= 0 so its cosine stays on its range
        decay = self._emit_decay(b, b.maximum(b.sub(step_f, warmup_steps), _c(b, 0.0)), decay_steps, target)
        return b.where(b.less(step_f, warmup_steps), warmup, decay)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): period ``i`` lasts ``first_decay_steps * t_mul**i`` steps and
    starts from ``initial * m_mul**i``; the rate decays to ``alpha`` times that within each period."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        if first_decay_steps <= 0:
            raise ValueError("Argument `first_decay_steps` must be > 0. Received: "
                             f"first_decay_steps={first_decay_steps}")
        self.initial_learning_rate = initial_learning_rate
        self.first_decay_steps = first_decay_steps
        self._t_mul = t_mul
        self._m_mul = m_mul
        self.alpha = alpha
        self.name = name

    def __call__(self, step):
        t_mul, m_mul, alpha = _f32(self._t_mul), _f32(self._m_mul), _f32(self.alpha)
        fraction = _f32(step) / _f32(self.first_decay_steps)
        if t_mul == _f32(1):
            restart = np.floor(fraction)
            fraction = fraction - restart
        else:
            restart = np.floor(np.log(_f32(1) - fraction * (_f32(1) - t_mul)) / np.log(t_mul))
            done = (_f32(1) - np.power(t_mul, restart)) / (_f32(1) - t_mul)
            fraction = (fraction - done) / np.power(t_mul, restart)
        cosine = _f32(0.5) * np.power(m_mul, restart) * (_f32(1) + np.cos(_f32(math.pi) * fraction))
        return _f32(self.initial_learning_rate) * ((_f32(1) - alpha) * cosine + alpha)

    def emit(self, b, step):
        t_mul, m_mul, alpha = _f32(self._t_mul), _f32(self._m_mul), _f32(self.alpha)
        fraction = b.div(_step_f32(b, step), _c(b, self.first_decay_steps))
        if t_mul == _f32(1):
            restart = _floor(b, fraction)
            fraction = b.sub(fraction, restart)
        else:
            grown = b.sub(_c(b, 1.0), b.mul(fraction, _c(b, _f32(1) - t_mul)))
            restart = _floor(b, b.div(b.log(grown), b.log(_c(b, t_mul))))
            scale = b.pow(_c(b, t_mul), restart)
            done = b.div(b.sub(_c(b, 1.0), scale), _c(b, _f32(1) - t_mul))
            fraction = b.div(b.sub(fraction, done), scale)
        # the fraction is in [0, 1] up to rounding, where the cosine's polynomial is exact
        cosine = b.mul(b.mul(_c(b, 0.5), b.pow(_c(b, m_mul), restart)),
                       b.add(_c(b, 1.0), _cos(b, b.mul(_c(b, math.pi), fraction))))
        decayed = b.add(b.mul(_c(b, _f32(1) - alpha), cosine), _c(b, alpha))
        return b.mul(_c(b, self.initial_learning_rate), decayed)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "first_decay_steps": self.first_decay_steps,
                "t_mul": self._t_mul, "m_mul": self._m_mul, "alpha": self.alpha, "name": self.name}


_CLASSES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay, CosineDecayRestarts,
                                          InverseTimeDecay, PolynomialDecay)}


def in_graph(learning_rate) -> bool:
    """Whether ``learning_rate`` is one of graphc's schedules, whose formula a training step computes itself
    (a subclass may override ``__call__``, and other callables are only known by calling them: the host
    evaluates those and feeds the step's ``learning_rate`` input)."""
    return type(learning_rate) in _CLASSES.values()


def serialize(schedule: LearningRateSchedule) -> dict:
    return {"module": "keras.optimizers.schedules", "class_name": type(schedule).__name__,
            "config": schedule.get_config(), "registered_name": None}


def deserialize(config: dict[str, Any]) -> LearningRateSchedule:
    name = config.get("class_name")
    if name not in _CLASSES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; graphc knows {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name].from_config(dict(config.get("config") or {}))
