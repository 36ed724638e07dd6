"""Where the native code spends its time, measured inside the code that runs.

:func:`profile_compiled` (``cm.profile(inputs)``, ``graphc bench MODEL --profile``) creates a
second instance of a native model's own library with the runtime's kernel timer on
(``gc_options_t.profile``, graphc/c_runtime/src/profile.c): the same fused kernels and the same
memory plan as ``cm.predict``, each launch timed in the generated code and charged to its op. The
report has one row per op that launched kernels (fused ops as they run; ops that became views
launch none), named by the user's layer: time per run, share of the kernels' total, FLOPs and bytes
from the op's shapes (:mod:`graphc.bench.op_cost`), GFLOP/s and GB/s, and the fraction of this
machine's measured peak (:mod:`graphc.bench.peak`) each reaches — of the compute peak where the
op's arithmetic intensity is above the ridge point, else of the memory bandwidth. The launch events
export as a Chrome / Perfetto trace (trace-event JSON, as onnxruntime's profiler writes).

The sum of the kernels is compared with the time of the whole run: ``run_ms`` is the generated
``run`` function's own time (kernels plus the argument set-up between them), ``call_ms`` the
Python call (binding, checks, output arrays).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.backends.llvm.in_place import native_schedule
from graphc.bench.op_cost import bind_free_dims, concrete, graph_op_costs

MAX_TRACE_EVENTS = 2_000_000


@dataclass
class KernelRow:
    """One op of the compiled graph that launched kernels: its times and work per run."""

    index: int  # position in graph.ops() (the runtime's op number)
    name: str  # the user's layer (or the op's id where it has none)
    op: str  # the op type (fused_conv, softmax, ...)
    output_shape: tuple[int, ...]
    launches: float  # kernel launches per run
    ms: float  # per run
    share: float  # of the kernels' total
    flops: int | None
    bytes: int
    gflops: float | None
    gbs: float
    bound: str | None  # "compute" or "memory" (arithmetic intensity against the ridge point), None without peak
    peak_pct: float | None  # % of the compute peak (compute-bound) or of the bandwidth (memory-bound)

    def to_dict(self) -> dict:
        return dict(self.__dict__, output_shape=list(self.output_shape))


@dataclass
class NativeProfileReport:
    """Per-kernel times of one native model at one input shape (see the module docstring)."""

    model: str
    shapes: dict[str, list[int]]
    threads: int
    runs: int
    rows: list[KernelRow]
    kernel_ms: float  # sum of the rows, per run
    run_ms: float  # the generated run function per run
    call_ms: float  # the Python call per run
    peak: Any = None  # graphc.bench.peak.Peak or None
    # (op, start_ns, duration_ns, thread)
    events: list[tuple[int, int, int, int]] = field(default_factory=list, repr=False)
    dropped_events: int = 0
    op_names: dict[int, str] = field(default_factory=dict, repr=False)
    sub_batch: int = 0  # samples per sub-batch the runs ran in (0: the batch whole; see batch_split)
    sub_batch_threads: int = 0  # sub-batches at once, one per thread (rows: the threads' times summed)
    tail_op: int = -1  # the first op of the batch's tail where the runs used it: its ops ran once, whole

    @property
    def total_flops(self) -> int:
        return sum(r.flops or 0 for r in self.rows)

    def row(self, name: str) -> KernelRow:
        """The first row of layer ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no kernel of layer {name!r} in the profile of {self.model!r}; layers: "
                       f"{', '.join(dict.fromkeys(r.name for r in self.rows))}")

    def to_dict(self) -> dict:
        return {"model": self.model, "shapes": self.shapes, "threads": self.threads, "runs": self.runs,
                "kernel_ms": self.kernel_ms, "run_ms": self.run_ms, "call_ms": self.call_ms,
                "total_flops": self.total_flops, "peak": self.peak.to_dict() if self.peak is not None else None,
                "rows": [r.to_dict() for r in self.rows], "dropped_events": self.dropped_events,
                "sub_batch": self.sub_batch, "sub_batch_threads": self.sub_batch_threads, "tail_op": self.tail_op}

    def to_markdown(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.shapes.items())
        lines = [f"### Native profile: {self.model}, {shapes}, {self.threads} thread(s), {self.runs} runs", "",
                 "| layer | op | output | launches | ms | share | GFLOP | GFLOP/s | MB | GB/s | bound | % of peak |",
                 "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in sorted(self.rows, key=lambda r: -r.ms):
            lines.append(
                f"| {r.name} | {r.op} | {tuple(r.output_shape)} | {r.launches:g} | {r.ms:.4f} | "
                f"{100 * r.share:.1f} % | "
                f"{_num(r.flops, 1e9, 4)} | {_num(r.gflops, 1, 1)} | {r.bytes / 1e6:.3f} | {r.gbs:.1f} | "
                f"{r.bound or '—'} | {_num(r.peak_pct, 1, 1)} |")
        total_gf = self.total_flops / 1e9
        lines.append(f"| **kernels** | | | {sum(r.launches for r in self.rows):g} | {self.kernel_ms:.4f} | 100 % | "
                     f"{total_gf:.4f} | {total_gf / (self.kernel_ms / 1e3) if self.kernel_ms else 0:.1f} | | | | |")
        lines += ["", f"Whole run: {self.run_ms:.4f} ms in the generated code, {self.call_ms:.4f} ms per Python "
                  f"call; {self._kernels_against_run()}"]
        if self.peak is not None:
            p, t = self.peak, self.kernel_threads
            lines.append(f"Peak: {p.compute_peak(t):.1f} GFLOP/s ({p.widest}-bit FMA, {t} "
                         f"thread(s)), {p.bandwidth(t):.1f} GB/s (triad), measured on {p.cpu}; "
                         "% of peak is of the compute peak for compute-bound kernels, of the bandwidth for "
                         "memory-bound ones.")
            if any(r.bound == "compute" and (r.peak_pct or 0) > 100 for r in self.rows):
                lines.append("Above 100 %: the peak is float32 FMAs', and FLOPs are the direct algorithm's (the "
                             "usual convention), while bf16 products run on AMX tiles and a convolution run by "
                             "Winograd's F(2x2, 3x3) does 16/36 of its multiplications (a 5x5's 49/100).")
        if self.dropped_events:
            lines.append(f"The trace kept the first events only ({self.dropped_events} dropped).")
        return "\n".join(lines)

    @property
    def kernel_threads(self) -> int:
        """The threads each kernel launch ran on: one where sub-batches ran at once, one per thread."""
        return 1 if self.sub_batch and self.sub_batch_threads > 1 else self.threads

    def _kernels_against_run(self) -> str:
        at_once = self.sub_batch_threads if self.sub_batch and self.sub_batch_threads > 1 else 1
        tail_ms = sum(r.ms for r in self.rows if r.index >= self.tail_op >= 0)
        head_ms = self.kernel_ms - tail_ms
        share = 100 * (head_ms / at_once + tail_ms) / self.run_ms if self.run_ms else 0.0
        tail = ""
        if self.tail_op >= 0 and self.sub_batch:
            first = next((r.name for r in sorted(self.rows, key=lambda r: r.index) if r.index >= self.tail_op), "")
            tail = (f"; the batch's tail, from {first} on, ran once over the whole batch on {self.threads} "
                    "thread(s)")
        if at_once > 1:
            return (f"the run went in sub-batches of {self.sub_batch} sample(s), {at_once} at a time, one per "
                    "thread: each kernel launched once per sub-batch on one thread, the rows the threads' times "
                    f"summed, % of peak against one thread's{tail} (the kernels: {share:.1f} % of the run).")
        text = f"the kernels are {share:.1f} % of the run"
        if self.sub_batch:
            text += f", in sub-batches of {self.sub_batch} sample(s) (each kernel launched once per sub-batch{tail})"
        return text + "."

    def __str__(self) -> str:
        return self.to_markdown()

    def trace(self) -> dict:
        """The launch events as Chrome / Perfetto trace-event JSON (``chrome://tracing``, ui.perfetto.dev)."""
        events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
                               "args": {"name": f"graphc {self.model}"}},
                              {"name": "thread_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "run"}}]
        by_index = {r.index: r for r in self.rows}
        run_number = 0
        for op, start, dur, thread in self.events:
            event = {"ph": "X", "pid": 1, "tid": thread, "ts": start / 1e3, "dur": dur / 1e3}
            if op < 0:
                event.update(name="run", cat="run", args={"run": run_number})
                run_number += 1
            else:
                r = by_index.get(op)
                event.update(name=self.op_names.get(op, f"op {op}"), cat="kernel",
                             args={"op_index": op, "op": r.op if r else "", "layer": r.name if r else "",
                                   "output_shape": list(r.output_shape) if r else []})
            events.append(event)
        for thread in sorted({e[3] for e in self.events} - {0}):  # sub-batches at once: one row per thread
            events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": thread,
                           "args": {"name": f"thread {thread}"}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"model": self.model, "threads": self.threads, "runs": self.runs}}

    def write_trace(self, path: str | os.PathLike) -> str:
        """Write :meth:`trace` to ``path``; returns the path."""
        with open(path, "w") as f:
            json.dump(self.trace(), f)
        return os.fspath(path)


def _num(value: float | None, scale: float, digits: int) -> str:
    return "—" if value is None else f"{value / scale:.{digits}f}"


def _check_runs(runs: Any, name: str, minimum: int) -> int:
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {runs!r}")
    return int(runs)


def profile_compiled(cm, x, runs: int = 10, *, warmup: int = 2, peak: Any = True,
                     trace_events: int | None = None) -> NativeProfileReport:
    """Profile a native CompiledModel on inputs ``x`` (anything ``cm.predict`` takes).

    ``peak``: True measures (or reuses) this machine's peak, a :class:`~graphc.bench.peak.Peak`
    is used as given, None/False leaves the % of peak out. ``trace_events``: the most launch events
    kept (default: all of the timed runs, up to 2 million).
    """
    runs = _check_runs(runs, "runs", 1)
    warmup = _check_runs(warmup, "warmup", 0)
    if getattr(cm, "target", None) != "native":
        raise ValueError(f"profiling times the native code: build the model with target='native' "
                         f"(this one is {getattr(cm, 'target', type(cm).__name__)!r})")
    feeds = cm.feeds(x)
    arrays = [cm._convert(name, feeds[name], dt) for name, dt in cm._in_dtypes]
    with cm._lock:
        cm._sync_weights()
        graph, library, source = cm.graph, cm.library, cm.instance
        ops = graph.ops()
        launches_per_run = int(cm.compile_stats.get("kernels", len(ops))) + 1
        # a batch run in sub-batches launches each kernel once per sub-batch: at most once per sample
        samples = int(arrays[0].shape[0]) if arrays and np.ndim(arrays[0]) else 1
        capacity = (min(MAX_TRACE_EVENTS, runs * launches_per_run * max(samples, 1)) if trace_events is None
                    else int(trace_events))
        instance = library.instance(cm.threads, profile=True, profile_events=capacity)
        try:
            if source.transfers["set_calls"]:  # weights pushed into cm's instance after linking
                for w in library.weights:
                    instance.set_weight(w.name, source.get_weight(w.name))
            for _ in range(warmup):
                instance.run(arrays)
            instance.reset_profile()
            t0 = time.perf_counter()
            for _ in range(runs):
                instance.run(arrays)
            call_s = time.perf_counter() - t0
            recorded = instance.profile()
            threads = instance.threads
            sub_batch = instance.sub_batch
            at_once = instance.sub_batch_threads
            tail_op = instance.batch_tail_op
        finally:
            instance.close()
    if isinstance(peak, bool):
        from graphc.bench.peak import measure_peak

        peak = measure_peak() if peak else None
    # sub-batches at once: every launch ran on one thread (the rows sum the threads' times)
    kernel_threads = 1 if at_once > 1 else threads
    rows = _rows(graph, ops, bind_free_dims(graph, arrays), recorded, runs, peak,
                 lambda index: threads if index >= tail_op >= 0 else kernel_threads, fused_ops(cm.compile_stats))
    kernel_ms = sum(r.ms for r in rows)
    for r in rows:
        r.share = r.ms / kernel_ms if kernel_ms else 0.0
    names = {r.index: r.name if r.name == r.op else f"{r.name} ({r.op})" for r in rows}
    return NativeProfileReport(
        model=graph.name, shapes={n: list(a.shape) for n, a in zip(graph.inputs, arrays)}, threads=threads,
        runs=recorded.runs, rows=rows, kernel_ms=kernel_ms, run_ms=recorded.run_ns / 1e6 / max(recorded.runs, 1),
        call_ms=call_s * 1e3 / runs, peak=peak, events=recorded.events, dropped_events=recorded.dropped_events,
        op_names=names, sub_batch=sub_batch, sub_batch_threads=at_once, tail_op=tail_op)


def profile_training_step(model, x, y, runs: int = 10, *, warmup: int = 2, peak: Any = True,
                          trace_events: int | None = None) -> NativeProfileReport:
    """Profile the native training step (forward, loss, backward, optimizer update) of a compiled Model
    on batch ``x``, ``y``: a second instance of the step's library, started from the state the model's
    own instance holds (weights, optimizer slots, iteration count), with the kernel timer on; the
    model's own state is left as it was. The model is compiled with ``model.compile`` and built
    with ``graphc.build(model, "native", training=True)``; its step is compiled here when it was not yet.
    Rows are the training graph's ops (backward ops are named by the layer they differentiate)."""
    from graphc.training.loop import standardize_x, standardize_y

    runs = _check_runs(runs, "runs", 1)
    warmup = _check_runs(warmup, "warmup", 0)
    trainer = getattr(model, "_graphc_trainer", None)
    runner = getattr(trainer, "runner", None)
    if runner is None or not hasattr(runner, "compiled"):
        raise ValueError("profiling a training step times the native step: compile the model and build it with "
                         "graphc.build(model, 'native', training=True)")
    xs, ys = standardize_x(model, x), standardize_y(model, y)
    step = trainer._step(xs, ys, True)
    compiled = runner.compiled(step)  # compiled on first use
    if not compiled.library.has_train_step or compiled.graph is None:
        raise ValueError(f"the native step library of {model.name!r} has no gc_instance_train_step")
    runner._push_state(step, compiled)  # host values the model's instance lacks go in (no step is taken)
    feeds = step._target_feeds(xs, ys)
    ins = [np.ascontiguousarray(feeds[v], dtype=compiled.dtypes[v]) for v in compiled.model_inputs]
    tgs = [np.ascontiguousarray(feeds[v], dtype=compiled.dtypes[v]) for v in compiled.targets]
    graph, library, source = native_schedule(compiled.graph)[0], compiled.library, compiled.instance
    ops = graph.ops()  # in the order the native step runs them: the profile's op numbers
    capacity = min(MAX_TRACE_EVENTS, runs * (len(ops) + 1)) if trace_events is None else int(trace_events)
    instance = library.instance(runner.threads, seed=runner.seed, profile=True, profile_events=capacity)
    try:
        for w in library.weights:
            instance.set_weight(w.name, source.get_weight(w.name))
        for _ in range(warmup):
            instance.train_step(ins, tgs)
        instance.reset_profile()
        t0 = time.perf_counter()
        for _ in range(runs):
            instance.train_step(ins, tgs)
        call_s = time.perf_counter() - t0
        recorded = instance.profile()
        threads = instance.threads
    finally:
        instance.close()
    if isinstance(peak, bool):
        from graphc.bench.peak import measure_peak

        peak = measure_peak() if peak else None
    bound = dict(zip(compiled.model_inputs + compiled.targets, ins + tgs))
    # the free dims (the batch) come from the fed arrays; the hyperparameter inputs have none
    bindings = bind_free_dims(graph, [bound.get(v, np.zeros(())) for v in graph.inputs])
    rows = _rows(graph, ops, bindings, recorded, runs, peak, lambda index: threads)
    kernel_ms = sum(r.ms for r in rows)
    for r in rows:
        r.share = r.ms / kernel_ms if kernel_ms else 0.0
    names = {r.index: r.name if r.name == r.op else f"{r.name} ({r.op})" for r in rows}
    return NativeProfileReport(
        model=f"{graph.name} (training step)", shapes={v: list(a.shape) for v, a in bound.items()},
        threads=threads, runs=recorded.runs, rows=rows, kernel_ms=kernel_ms,
        run_ms=recorded.run_ns / 1e6 / max(recorded.runs, 1), call_ms=call_s * 1e3 / runs, peak=peak,
        events=recorded.events, dropped_events=recorded.dropped_events, op_names=names)


def profile_model(model_or_name: Any, batch: int = 32, threads: int = 1, runs: int = 10, *, seed: int = 0,
                  peak: Any = True, level: int = 2) -> NativeProfileReport:
    """Profile a Model or a bundled example's native code at ``batch`` (the benchmark's inputs)."""
    import graphc
    from graphc.bench import _input_arrays, _subject

    runs = _check_runs(runs, "runs", 1)
    subject = _subject(model_or_name, seed)
    model = subject.make_model()
    cm = graphc.build(model, target="native", level=level, threads=threads)
    arrays = _input_arrays(subject, graphc.lower(model), batch, seed)
    return profile_compiled(cm, list(arrays) if len(arrays) > 1 else arrays[0], runs, peak=peak)


def fused_ops(stats: dict) -> dict[int, list[int]]:
    """Op number -> the op numbers whose work its kernels do (a pooling done by its convolution's kernel),
    from the build's ``fused_ops`` statistic (:meth:`graphc.backends.llvm.codegen._Codegen.fused_ops`)."""
    out: dict[int, list[int]] = {}
    for pair in str(stats.get("fused_ops", "") or "").split():
        producer, op = pair.split(":")
        out.setdefault(int(producer), []).append(int(op))
    return out


def _rows(graph, ops, bindings, recorded, runs: int, peak, threads: Callable[[int], int],
          fused: dict[int, list[int]] | None = None) -> list[KernelRow]:
    """One row per op with launches; ``threads(index)``: the threads each launch of the op ran on."""
    costs = graph_op_costs(graph, bindings)
    rows = []
    for index, (ns, launches) in enumerate(zip(recorded.op_ns, recorded.op_launches)):
        if launches == 0:
            continue
        if index < len(ops):
            op = ops[index]
            name, kind = op.layer or op.id, op.type
            flops, nbytes = costs[index]
            out = concrete(graph.values[op.outputs[0]].type.shape, bindings)
            for j in (fused or {}).get(index, ()):
                # the op's result never reaches memory: its bytes leave the count twice (written, read back)
                inner = ops[j]
                name, kind = f"{name}+{inner.layer or inner.id}", f"{kind}+{inner.type}"
                size = int(np.prod(out)) * graph.values[op.outputs[0]].type.itemsize
                flops = None if flops is None or costs[j][0] is None else flops + costs[j][0]
                nbytes = nbytes + costs[j][1] - 2 * size
                out = concrete(graph.values[inner.outputs[0]].type.shape, bindings)
        else:  # the copy of graph outputs no op writes
            name, kind, flops, nbytes, out = "graph outputs", "copy", 0, 0, ()
        seconds = ns / 1e9 / runs
        gflops = flops / seconds / 1e9 if flops is not None and seconds > 0 else None
        gbs = nbytes / seconds / 1e9 if seconds > 0 else 0.0
        bound = pct = None
        if peak is not None:
            compute, bandwidth = peak.compute_peak(threads(index)), peak.bandwidth(threads(index))
            intensity = (flops or 0) / nbytes if nbytes else float("inf")
            bound = "compute" if intensity >= compute / bandwidth else "memory"
            pct = 100 * gflops / compute if bound == "compute" and gflops is not None else 100 * gbs / bandwidth
        rows.append(KernelRow(index=index, name=name, op=kind, output_shape=tuple(out), launches=launches / runs,
                              ms=ns / 1e6 / runs, share=0.0, flops=flops, bytes=nbytes, gflops=gflops, gbs=gbs,
                              bound=bound, peak_pct=pct))
    return rows


__all__ = ["KernelRow", "NativeProfileReport", "profile_compiled", "profile_model", "profile_training_step"]
