"""Where the time goes: each layer of a model timed alone, on every engine.

The native backend has no per-op timer, so :func:`profile_layers` times sub-graphs instead:
it runs the model eagerly (graphc's reference interpreter) to get every layer's real input
arrays, then wraps each layer call in a one-layer Model (a copy of the layer with the same
weights and the same input types, free dims included), and benchmarks that model like any
other (:func:`graphc.bench.run_benchmark`). Fusion across layer boundaries and the memory plan
of the whole model are lost, so the per-layer sum is not the whole model's time; the rows say
which layers an engine is slow on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.bench import BenchCase, _first_line, _ms, _parse_vs, _subject, _x, run_benchmark


@dataclass
class LayerRow:
    """One layer call: its name, class, output shape and the benchmark of it alone."""

    layer: str
    kind: str
    output_shape: str
    case: BenchCase | None = None
    error: str | None = None


@dataclass
class LayerProfile:
    """Per-layer times of one model at one batch size and thread count."""

    model: str
    batch: int
    threads: int
    rows: list[LayerRow] = field(default_factory=list)

    def total(self, engine: str) -> float | None:
        """Sum over layers (None if any layer is missing for this engine)."""
        values = [r.case.median(engine) if r.case else None for r in self.rows]
        return None if not values or any(v is None for v in values) else float(sum(values))

    def to_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "threads": self.threads,
                "rows": [{"layer": r.layer, "kind": r.kind, "output_shape": r.output_shape, "error": r.error,
                          "case": r.case.to_dict() if r.case else None} for r in self.rows]}

    def to_markdown(self) -> str:
        lines = [f"### Per layer: {self.model}, batch {self.batch}, {self.threads} thread(s)", "",
                 "| layer | class | output | graphc ms | onnxruntime ms | ort/graphc | torch ms | torch/graphc |",
                 "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            if r.case is None:
                lines.append(f"| {r.layer} | {r.kind} | {r.output_shape} | **failed**: {r.error} | | | | |")
                continue
            c = r.case
            best = c.best_onnxruntime
            g = c.results.get("graphc")
            gcell = _ms(c.median("graphc")) if g is not None and g.ok else \
                f"**failed**: {g.error if g is not None else '?'}"
            lines.append(f"| {r.layer} | {r.kind} | {r.output_shape} | {gcell} | "
                         f"{_ms(c.median(best)) if best else '—'}{'' if best != 'onnxruntime-l0' else ' (plain)'} | "
                         f"{_x(c.ratios['ort/graphc'])} | {_ms(c.median('torch'))} | {_x(c.ratios['torch/graphc'])} |")
        best_total = [self.total(e) for e in ("onnxruntime", "onnxruntime-l0")]
        best_total = [v for v in best_total if v is not None]
        g_total = self.total("graphc")
        ort_total = min(best_total) if best_total else None
        t_total = self.total("torch")
        lines.append(f"| **sum** | | | {_ms(g_total)} | {_ms(ort_total)} | "
                     f"{_x(ort_total / g_total if ort_total and g_total else None)} | {_ms(t_total)} | "
                     f"{_x(t_total / g_total if t_total and g_total else None)} |")
        return "\n".join(lines)


def _replace_tensors(leaves: list, tensors: list) -> list:
    """``leaves`` with its symbolic tensors replaced, in order, by ``tensors``."""
    it = iter(tensors)
    from graphc.frontend.tensor import KerasTensor

    return [next(it) if isinstance(x, KerasTensor) else x for x in leaves]


def _shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def profile_layers(model_or_name: Any, batch: int = 32, threads: int = 1,
                   vs: Iterable[str] | str | None = ("onnxruntime", "torch"), repeat: int = 5, *, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> LayerProfile:
    """Time every layer call of a model alone (see the module docstring)."""
    import graphc
    from graphc.frontend import nest
    from graphc.frontend.input_layer import Input
    from graphc.frontend.model import Model
    from graphc.frontend.tensor import KerasTensor

    vs = _parse_vs(vs)
    subject = _subject(model_or_name, seed)
    model = subject.make_model()
    graph = graphc.lower(model)
    from graphc.bench import _input_arrays

    arrays = _input_arrays(subject, graph, batch, seed)
    env: dict[int, np.ndarray] = {id(t): a for t, a in zip(model.inputs, arrays)}
    profile = LayerProfile(subject.name, batch, threads)
    say = progress or (lambda msg: None)
    for node in model._nodes:
        if node.is_input:
            continue
        layer = node.layer
        row = LayerRow(layer.name, type(layer).__name__,
                       ", ".join(_shape_text(t.shape) for t in node.output_tensors))
        profile.rows.append(row)

        def lookup(x):
            return env[id(x)] if isinstance(x, KerasTensor) else x

        args = nest.map_structure(lookup, node.call_args)
        kwargs = {k: nest.map_structure(lookup, v) for k, v in node.call_kwargs.items()}
        out = layer(args, **kwargs)
        for t, v in zip(node.output_tensors, nest.flatten(out)):
            env[id(t)] = np.asarray(v)
        try:
            inputs = [Input(shape=t.shape[1:], dtype=t.dtype) for t in node.input_tensors]
            sym_args = nest.pack_like(node.call_args, _replace_tensors(nest.flatten(node.call_args), inputs))
            clone = type(layer).from_config(layer.get_config())
            sym_out = clone(sym_args, **{k: v for k, v in node.call_kwargs.items() if not isinstance(v, KerasTensor)})
            clone.set_weights(layer.get_weights())
            sub = Model(inputs, sym_out, name=f"{subject.name}_{layer.name}")
            data = [env[id(t)] for t in node.input_tensors]
            say(f"{subject.name}: profiling layer {layer.name}")
            report = run_benchmark(sub, batch_sizes=(batch,), threads=(threads,), vs=vs, unfused=False,
                                   repeat=repeat, seed=seed, check=False, inputs=data)
            row.case = report.cases[0]
        except Exception as exc:  # noqa: BLE001 - recorded in the profile
            row.error = _first_line(exc)
    return profile


__all__ = ["LayerProfile", "LayerRow", "profile_layers"]
