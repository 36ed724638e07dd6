"""Keras 3 learning-rate schedules: the learning rate as a function of the optimizer's iteration count.

A schedule is called with the iteration count before the step (``optimizer.iterations``) and
returns a float32 learning rate, computed in float32 with Keras's order of operations; the
training step reads it as its ``learning_rate`` input, so reference and native steps follow it
alike. ``serialize``/``deserialize`` use Keras's form (``module: keras.optimizers.schedules``),
so optimizer configs with schedules round-trip through ``.keras`` files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "InverseTimeDecay",
           "PolynomialDecay", "serialize", "deserialize"]

_f32 = np.float32


def _positive_decay_steps(decay_steps) -> None:
    if decay_steps <= 0:
        raise ValueError(f"Argument `decay_steps` must be > 0. Received: decay_steps={decay_steps}")


class LearningRateSchedule:
    """Base class: ``schedule(step)`` is the learning rate at iteration ``step``."""

    def __call__(self, step) -> np.float32:
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

    def __call__(self, step):
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return _f32(value)
        return _f32(self.values[-1])

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
        return start * ((_f32(1) - _f32(self.alpha)) * cosine + _f32(self.alpha))

    def __call__(self, step):
        initial, decay_steps, step_f = _f32(self.initial_learning_rate), _f32(self.decay_steps), _f32(step)
        if self.warmup_target is None:
            return self._decay(min(step_f, decay_steps), decay_steps, initial)
        target, warmup_steps = _f32(self.warmup_target), _f32(self.warmup_steps)
        step_f = min(step_f, decay_steps + warmup_steps)
        if step_f < warmup_steps:
            return (target - initial) * (step_f / warmup_steps) + initial
        return self._decay(step_f - warmup_steps, decay_steps, target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


_CLASSES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay, InverseTimeDecay,
                                          PolynomialDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    return {"module": "keras.optimizers.schedules", "class_name": type(schedule).__name__,
            "config": schedule.get_config(), "registered_name": None}


def deserialize(config: dict[str, Any]) -> LearningRateSchedule:
    name = config.get("class_name")
    if name not in _CLASSES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; graphc knows {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name].from_config(dict(config.get("config") or {}))
