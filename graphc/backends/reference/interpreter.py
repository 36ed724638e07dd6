"""Runs an IR graph op by op with each op's NumPy reference.

Not a performance path, but not a wasteful one either: values are freed as soon as their
last reader has run, and the references themselves are vectorised.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.types import is_float, is_int
from graphc.ops.registry import get


class InputError(ValueError):
    """A graph input that is missing, unknown, or of the wrong shape or dtype."""


class OpExecutionError(RuntimeError):
    """An op failed while running; the message names the op and its layer."""


def bind_inputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Check ``feeds`` against the graph inputs; returns (converted arrays, free-dim bindings)."""
    missing = [n for n in graph.inputs if n not in feeds]
    unknown = [n for n in feeds if n not in graph.inputs]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise InputError(f"{'; '.join(parts)}; the graph takes {graph.inputs}")
    arrays: dict[str, np.ndarray] = {}
    bindings: dict[str, int] = {}
    for name in graph.inputs:
        t = graph.values[name].type
        a = np.asarray(feeds[name])
        if a.dtype == object:
            raise InputError(f"input {name!r}: cannot use an array of Python objects")
        if is_float(t.dtype):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                raise InputError(f"input {name!r} expects {t.dtype}, got {a.dtype}")
            a = a.astype(t.dtype, copy=False)
        elif is_int(t.dtype):
            if not np.issubdtype(a.dtype, np.integer):
                if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
                    raise InputError(f"input {name!r} expects integer ids ({t.dtype}), got {a.dtype}")
            info = np.iinfo(t.dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise InputError(f"input {name!r}: values from {a.min()} to {a.max()} do not fit {t.dtype}")
            a = a.astype(t.dtype, copy=False)
        if a.ndim != t.rank:
            raise InputError(f"input {name!r} expects shape {_fmt(t.shape)} (rank {t.rank}), "
                             f"got shape {a.shape}")
        for axis, (d, n) in enumerate(zip(t.shape, a.shape)):
            if isinstance(d, int):
                if d != n:
                    raise InputError(f"input {name!r} expects shape {_fmt(t.shape)}, got {a.shape} "
                                     f"(axis {axis}: expected {d}, got {n})")
            elif d.isidentifier():
                if d in bindings and bindings[d] != n:
                    raise InputError(f"input {name!r}: free dimension {d!r} (axis {axis}) is {n}, but "
                                     f"another input gives it {bindings[d]}")
                bindings[d] = n
        arrays[name] = a
    for name in graph.inputs:
        t = graph.values[name].type
        for axis, d in enumerate(t.shape):
            if isinstance(d, str) and not d.isidentifier():
                want = dims.evaluate(d, bindings)
                if want != arrays[name].shape[axis]:
                    raise InputError(f"input {name!r} axis {axis} must be {d} = {want}")
    return arrays, bindings


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if isinstance(d, str) else str(d) for d in shape) + ")"


def run(graph: Graph, feeds: Mapping[str, np.ndarray], *, keep: bool = False) -> dict[str, np.ndarray]:
    """Evaluate ``graph``; returns its outputs by name (every value too when ``keep``)."""
    arrays, bindings = bind_inputs(graph, feeds)
    env: dict[str, np.ndarray] = dict(graph.constants)
    env.update(arrays)
    ops = graph.ops()
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for v in op.inputs:
            last_use[v] = i
    protected = set(graph.outputs) | set(graph.constants)
    for i, op in enumerate(ops):
        opdef = get(op.type)
        args = [env[v] for v in op.inputs]
        attrs = opdef.resolve_attrs(op.attrs)
        if opdef.uses_dims:
            attrs["bindings"] = bindings
        try:
            result = opdef.reference(*args, **attrs)
        except Exception as exc:
            where = f"op {op.id!r} ({op.type}" + (f", layer {op.layer!r})" if op.layer else ")")
            shapes = ", ".join(str(a.shape) for a in args)
            raise OpExecutionError(f"{where} failed on inputs of shape {shapes}: {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        for name, r in zip(op.outputs, results):
            env[name] = np.asarray(r)
        if not keep:
            for v in op.inputs:
                if last_use.get(v) == i and v not in protected:
                    env.pop(v, None)
    if keep:
        return env
    return {name: env[name] for name in graph.outputs}
