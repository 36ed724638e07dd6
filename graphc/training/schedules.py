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
import operator
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


class _ScalarMath:
    """The arithmetic of :meth:`LearningRateSchedule.__call__`: float32 NumPy scalars, NumPy's cosine."""

    add, sub, mul = staticmethod(operator.add), staticmethod(operator.sub), staticmethod(operator.mul)
    greater, less, equal = staticmethod(operator.gt), staticmethod(operator.lt), staticmethod(operator.eq)
    pow, log, cos, floor, ceil = (staticmethod(f) for f in (np.power, np.log, np.cos, np.floor, np.ceil))
    minimum, maximum = staticmethod(np.minimum), staticmethod(np.maximum)

    @staticmethod
    def c(value, dtype: str = "float32"):
        return np.asarray(value, dtype=dtype)[()]

    @staticmethod
    def step(step):
        return _f32(step)

    @staticmethod
    def counter(value, step):
        return value

    @staticmethod
    def div(x, y):
        with np.errstate(divide="ignore", invalid="ignore"):  # in a branch where() drops (no warmup steps)
            return x / y

    @staticmethod
    def where(condition, x, y):
        return x if condition else y


class _GraphMath:
    """The arithmetic of :meth:`LearningRateSchedule.emit`: ops of ``b``'s graph on float32 scalars."""

    def __init__(self, b: OpBuilder):
        self.b = b

    def c(self, value, dtype: str = "float32") -> str:
        return _c(self.b, value, dtype)

    def step(self, step: str) -> str:
        return _step_f32(self.b, step)

    def counter(self, value: int, step: str) -> str:
        """``value`` in the iteration counter's integer type."""
        return _c(self.b, value, self.b.graph.type_of(step).dtype)

    def log(self, x: str) -> str:
        return self.b.log(x)

    def cos(self, x: str) -> str:
        return _cos(self.b, x)

    def floor(self, x: str) -> str:
        return _floor(self.b, x)

    def ceil(self, x: str) -> str:
        return _ceil(self.b, x)

    def __getattr__(self, name: str):  # add, sub, mul, div, pow, minimum, maximum, greater, less, equal, where
        return getattr(self.b, name)


_SCALAR = _ScalarMath()


class LearningRateSchedule:
    """Base class: ``schedule(step)`` is the learning rate at iteration ``step``; ``emit`` writes the same
    formula into a graph. graphc's schedules write their formula once (``_rate``), on the arithmetic of
    either; a subclass of the user's may define ``__call__`` alone (its steps are then fed the rate)."""

    def __call__(self, step) -> np.float32:
        return self._rate(_SCALAR, step)

    def emit(self, b: OpBuilder, step: str) -> str:
        """The float32 scalar learning rate at ``step`` (an int64 scalar value of ``b``'s graph)."""
        return self._rate(_GraphMath(b), step)

    def _rate(self, m, step):
        """The rate at ``step`` in the arithmetic ``m`` (:class:`_ScalarMath` or :class:`_GraphMath`)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> LearningRateSchedule:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_config()}>"


class _TimeDecay(LearningRateSchedule):
    """What ExponentialDecay and InverseTimeDecay share: their arguments and ``step / decay_steps``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        _positive_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def _progress(self, m, step):
        """``step / decay_steps``, floored with ``staircase``."""
        p = m.div(m.step(step), m.c(self.decay_steps))
        return m.floor(p) if self.staircase else p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_TimeDecay):
    """``initial * decay_rate ** (step / decay_steps)`` (the exponent floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def _rate(self, m, step):
        return m.mul(m.c(self.initial_learning_rate), m.pow(m.c(self.decay_rate), self._progress(m, step)))


class InverseTimeDecay(_TimeDecay):
    """``initial / (1 + decay_rate * step / decay_steps)`` (the ratio floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def _rate(self, m, step):
        scaled = m.mul(m.c(self.decay_rate), self._progress(m, step))
        return m.div(m.c(self.initial_learning_rate), m.add(m.c(1.0), scaled))


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

    def _rate(self, m, step):
        rate = m.c(self.values[-1])
        for boundary, value in reversed(list(zip(self._step_boundaries(), self.values))):
            rate = m.where(m.greater(step, m.counter(boundary, step)), rate, m.c(value))
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

    def _rate(self, m, step):
        step_f, decay_steps = m.step(step), m.c(self.decay_steps)
        if self.cycle:
            multiplier = m.where(m.equal(step_f, m.c(0.0)), m.c(1.0), m.ceil(m.div(step_f, decay_steps)))
            decay_steps = m.mul(decay_steps, multiplier)
        else:
            step_f = m.minimum(step_f, decay_steps)
        p = m.div(step_f, decay_steps)
        initial, end = _f32(self.initial_learning_rate), _f32(self.end_learning_rate)
        return m.add(m.mul(m.c(initial - end), m.pow(m.sub(m.c(1.0), p), m.c(self.power))), m.c(end))

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

    def _decay(self, m, step, decay_steps, start):
        cosine = m.mul(m.c(0.5), m.add(m.c(1.0), m.cos(m.mul(m.c(math.pi), m.div(step, decay_steps)))))
        return m.mul(start, m.add(m.mul(m.c(1 - self.alpha), cosine), m.c(self.alpha)))

    def _rate(self, m, step):
        initial, decay_steps, step_f = m.c(self.initial_learning_rate), m.c(self.decay_steps), m.step(step)
        if self.warmup_target is None:
            return self._decay(m, m.minimum(step_f, decay_steps), decay_steps, initial)
        target, warmup_steps = m.c(self.warmup_target), m.c(self.warmup_steps)
        step_f = m.minimum(step_f, m.add(decay_steps, warmup_steps))
        delta = m.c(_f32(self.warmup_target) - _f32(self.initial_learning_rate))
        warmup = m.add(m.mul(delta, m.div(step_f, warmup_steps)), initial)
        # both branches are computed in a graph; the decay's step is kept >= 0 so its cosine stays on its range
        decay = self._decay(m, m.maximum(m.sub(step_f, warmup_steps), m.c(0.0)), decay_steps, target)
        return m.where(m.less(step_f, warmup_steps), warmup, decay)

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

    def _rate(self, m, step):
        t_mul, m_mul, alpha = _f32(self._t_mul), _f32(self._m_mul), _f32(self.alpha)
        fraction = m.div(m.step(step), m.c(self.first_decay_steps))
        if t_mul == _f32(1):
            restart = m.floor(fraction)
            fraction = m.sub(fraction, restart)
        else:
            grown = m.sub(m.c(1.0), m.mul(fraction, m.c(_f32(1) - t_mul)))
            restart = m.floor(m.div(m.log(grown), m.log(m.c(t_mul))))
            scale = m.pow(m.c(t_mul), restart)
            done = m.div(m.sub(m.c(1.0), scale), m.c(_f32(1) - t_mul))
            fraction = m.div(m.sub(fraction, done), scale)
        # the fraction is in [0, 1] up to rounding, where the graph's cosine polynomial is exact
        cosine = m.mul(m.mul(m.c(0.5), m.pow(m.c(m_mul), restart)),
                       m.add(m.c(1.0), m.cos(m.mul(m.c(math.pi), fraction))))
        decayed = m.add(m.mul(m.c(_f32(1) - alpha), cosine), m.c(alpha))
        return m.mul(m.c(self.initial_learning_rate), decayed)

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
