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
    """Per-layer times of one model at one batch size and thread count.

    ``ort_ops``: onnxruntime's own profile of the whole model (ms per run by ONNX op type), the
    fair counterpart of graphc's per-layer times (inside the whole model onnxruntime drops the
    layout transposes that a one-layer NHWC model needs).
    """

    model: str
    batch: int
    threads: int
    rows: list[LayerRow] = field(default_factory=list)
    ort_ops: dict[str, float] = field(default_factory=dict)
    ort_ops_error: str | None = None

    def by_class(self, engine: str = "graphc") -> dict[str, float]:
        """Per-layer medians summed by layer class."""
        out: dict[str, float] = {}
        for r in self.rows:
            v = r.case.median(engine) if r.case else None
            if v is not None:
                out[r.kind] = out.get(r.kind, 0.0) + v
        return out

    def total(self, engine: str) -> float | None:
        """Sum over layers (None if any layer is missing for this engine)."""
        values = [r.case.median(engine) if r.case else None for r in self.rows]
        return None if not values or any(v is None for v in values) else float(sum(values))

    def to_dict(self) -> dict:
        rows = [{"layer": r.layer, "kind": r.kind, "output_shape": r.output_shape, "error": r.error,
                 "case": r.case.to_dict() if r.case else None} for r in self.rows]
        return {"model": self.model, "batch": self.batch, "threads": self.threads, "ort_ops": self.ort_ops,
                "ort_ops_error": self.ort_ops_error, "rows": rows}

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
        lines += ["", "Layers alone: a one-layer model's onnxruntime time includes the NHWC/NCHW transposes "
                  "around it, which the whole model mostly avoids. The fair comparison is graphc's per-layer "
                  "times by class against onnxruntime's own profile of the whole model by op type:", "",
                  "| graphc layer class | ms | | onnxruntime op (whole model) | ms |", "|---|---:|---|---|---:|"]
        classes = sorted(self.by_class().items(), key=lambda kv: -kv[1])
        ops = sorted(self.ort_ops.items(), key=lambda kv: -kv[1])
        if self.ort_ops_error:
            ops = [(f"**failed**: {self.ort_ops_error}", None)]
        for i in range(max(len(classes), len(ops))):
            c = classes[i] if i < len(classes) else ("", None)
            o = ops[i] if i < len(ops) else ("", None)
            o_ms = _ms(o[1]) if o[0] and o[1] is not None else ""
            lines.append(f"| {c[0]} | {_ms(c[1]) if c[0] else ''} | | {o[0]} | {o_ms} |")
        lines.append(f"| **total** | {_ms(sum(v for _, v in classes))} | | **total** | "
                     f"{_ms(sum(v for _, v in ops if v is not None))} |")
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
    if "onnxruntime" in vs:
        try:
            profile.ort_ops = onnxruntime_op_profile(model, arrays, threads, runs=max(5, repeat * 2))
        except Exception as exc:  # noqa: BLE001 - recorded in the profile
            profile.ort_ops_error = _first_line(exc)
    return profile


def onnxruntime_op_profile(model, arrays: list[np.ndarray], threads: int, runs: int = 10) -> dict[str, float]:
    """onnxruntime's profiler on the whole model: kernel ms per run by op type.

    Both of graphc's exports (optimized and plain) are profiled; the one with less kernel
    time is returned, as the benchmark takes the faster one.
    """
    import json
    import os
    import tempfile

    import onnxruntime as ort

    import graphc

    best: dict[str, float] | None = None
    graph = graphc.lower(model)
    feeds = dict(zip(graph.inputs, arrays))
    for level in (2, 0):
        proto = graphc.onnx.export(model, optimize=level)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory() as tmp:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tmp, "ort")
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            for _ in range(2 + runs):  # two warm-up runs, left out below
                session.run(None, feeds)
            with open(session.end_profiling()) as f:
                events = json.load(f)
        totals: dict[str, float] = {}
        model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
        cutoff = model_runs[1]["ts"] + model_runs[1]["dur"] if len(model_runs) > 2 else -1
        for e in events:
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] > cutoff:
                op = e.get("args", {}).get("op_name", "?")
                totals[op] = totals.get(op, 0.0) + e["dur"] / 1e3 / runs
        if best is None or sum(totals.values()) < sum(best.values()):
            best = totals
    return best or {}


__all__ = ["LayerProfile", "LayerRow", "profile_layers"]
