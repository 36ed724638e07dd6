"""Weight initializers with Keras's names, defaults and fan computations."""

from __future__ import annotations

import math

import numpy as np

from graphc.frontend import state


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's (fan_in, fan_out): kernels (..., in, out) count the receptive field."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Callable ``(shape, dtype) -> np.ndarray``."""

    def __call__(self, shape, dtype="float32") -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype="float32"):
        return np.full(shape, self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        return {}


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype="float32"):
        return _gen(self.seed).uniform(self.minval, self.maxval, size=shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype="float32"):
        return _gen(self.seed).normal(self.mean, self.stddev, size=shape).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    def __call__(self, shape, dtype="float32"):
        gen = _gen(self.seed)
        out = gen.normal(0.0, 1.0, size=shape)
        bad = np.abs(out) > 2
        while bad.any():
            out[bad] = gen.normal(0.0, 1.0, size=int(bad.sum()))
            bad = np.abs(out) > 2
        return (self.mean + self.stddev * out).astype(dtype)


class VarianceScaling(Initializer):
    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"invalid mode {mode!r}: expected fan_in, fan_out or fan_avg")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"invalid distribution {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = compute_fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        scale = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * scale)
            return _gen(self.seed).uniform(-limit, limit, size=shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return _gen(self.seed).normal(0.0, math.sqrt(scale), size=shape).astype(dtype)
        stddev = math.sqrt(scale) / 0.87962566103423978
        return TruncatedNormal(0.0, stddev, self.seed)(shape, dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class GlorotUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class LecunNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class LecunUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class Orthogonal(Initializer):
    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def __call__(self, shape, dtype="float32"):
        if len(shape) < 2:
            raise ValueError(f"the orthogonal initializer needs a shape of rank >= 2, got {shape}")
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        flat = _gen(self.seed).normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dtype)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype="float32"):
        if len(shape) != 2:
            raise ValueError(f"the identity initializer needs a 2-D shape, got {shape}")
        return (self.gain * np.eye(*shape)).astype(dtype)


def _gen(seed) -> np.random.Generator:
    return np.random.default_rng(seed) if seed is not None else state.rng()


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_uniform": RandomUniform,
    "uniform": RandomUniform, "random_normal": RandomNormal, "normal": RandomNormal,
    "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_normal": HeNormal,
    "he_uniform": HeUniform, "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform,
    "orthogonal": Orthogonal, "identity": Identity,
}
_CLASS_NAMES = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier) -> Initializer:
    """An initializer from a name ("glorot_uniform"), a class name, a config dict or an instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if callable(identifier) and not isinstance(identifier, type):
        return _Callable(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _BY_NAME.get(state.to_snake_case(identifier)) \
            or _CLASS_NAMES.get(identifier)
        if cls is None:
            raise ValueError(f"unknown initializer {identifier!r}; known: {', '.join(sorted(_BY_NAME))}")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _CLASS_NAMES.get(identifier["class_name"]) or _BY_NAME.get(identifier["class_name"])
        if cls is None:
            raise ValueError(f"unknown initializer class {identifier['class_name']!r}")
        return cls(**identifier.get("config", {}))
    raise ValueError(f"cannot interpret {identifier!r} as an initializer")


def serialize(init: Initializer) -> dict:
    return {"module": "keras.initializers", "class_name": type(init).__name__,
            "config": init.get_config(), "registered_name": None}


class _Callable(Initializer):
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, shape, dtype="float32"):
        return np.asarray(self.fn(shape, dtype=dtype), dtype=dtype)
