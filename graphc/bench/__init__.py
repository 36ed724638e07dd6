"""Speed comparisons: graphc's native code against onnxruntime and PyTorch, in one process.

``run_benchmark(model_or_name, batch_sizes, threads, vs, unfused, repeat)`` times, for every
batch size and thread count, the same inputs through

- ``graphc``: ``graphc.build(model, target="native", level=2, threads=T)`` (the fused code);
- ``graphc-unfused``: the same at ``level=0`` (what the optimization passes buy);
- ``onnxruntime``: graphc's ONNX export of the optimized graph, and ``onnxruntime-l0``: the
  export of the plain lowering, each in an ``InferenceSession`` with ``intra_op_num_threads=T``,
  one inter-op thread and sequential execution; the faster of the two is the baseline;
- ``torch``: a plain ``torch.nn`` twin of the model with the same weights
  (:mod:`graphc.bench.torch_twin`), eager, ``torch.set_num_threads(T)``, under ``inference_mode``.

Noise (the machine is shared): engines are warmed up, then measured in rounds; each round runs
every engine once, in rotated order, as a block of back-to-back calls (one untimed call first; on
several threads, untimed calls for 0.1 s, until the previous engine's spinning workers sleep),
so that load drifting over time hits all engines alike. Times are medians over the rounds;
ratios are quotients of medians (``ort/graphc`` > 1: graphc is faster). Before timing, every
engine's outputs are compared with graphc's reference interpreter; a disagreement is reported.
A failure (an engine that cannot build or run the model) is recorded with its error's first
line, never dropped.

:func:`profile_layers` times each layer alone (same shapes as inside the model) to show where
the time goes; :func:`run_training_benchmark` compares training steps.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("graphc", "graphc-unfused", "onnxruntime", "onnxruntime-l0", "torch", "openvino", "openvino-default")
VS_CHOICES = ("onnxruntime", "torch", "openvino")
# OpenVINO's two settings: float32 throughout, and its default precision (bf16 where the CPU has it)
OPENVINO_PRECISIONS = {"openvino": "f32", "openvino-default": None}
MISMATCH_RTOL = 1e-3


class BenchError(ValueError):
    """Bad benchmark arguments (unknown engine, empty batch list...)."""


# ------------------------------------------------------------------------------------------ results


@dataclass
class EngineResult:
    """One engine on one configuration: per-round times in ms, or the error that stopped it."""

    engine: str
    samples_ms: list[float] = field(default_factory=list)
    error: str | None = None
    calls_per_sample: int = 1
    max_rel_error: float | None = None  # against graphc's reference interpreter

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples_ms)

    @property
    def median_ms(self) -> float | None:
        return float(np.median(self.samples_ms)) if self.ok else None

    @property
    def spread(self) -> float | None:
        """Interquartile range over the median (0.05: the middle half of the rounds within 5 %)."""
        if not self.ok or len(self.samples_ms) < 2:
            return None
        q1, q3 = np.percentile(self.samples_ms, [25, 75])
        return float((q3 - q1) / np.median(self.samples_ms))

    @property
    def mismatch(self) -> bool:
        return self.max_rel_error is not None and not self.max_rel_error <= MISMATCH_RTOL

    def to_dict(self) -> dict:
        return {"engine": self.engine, "median_ms": self.median_ms, "spread": self.spread,
                "samples_ms": [round(s, 6) for s in self.samples_ms], "calls_per_sample": self.calls_per_sample,
                "error": self.error, "max_rel_error": self.max_rel_error}


@dataclass
class BenchCase:
    """One model at one batch size and thread count: every engine's result."""

    model: str
    batch: int
    threads: int
    results: dict[str, EngineResult] = field(default_factory=dict)
    load: float | None = None  # 1-minute load average when the case started

    def median(self, engine: str) -> float | None:
        r = self.results.get(engine)
        return r.median_ms if r is not None else None

    def ratio(self, engine: str, base: str = "graphc") -> float | None:
        """``median(engine) / median(base)``: above 1 means ``base`` is faster."""
        a, b = self.median(engine), self.median(base)
        return a / b if a is not None and b is not None and b > 0 else None

    @property
    def best_onnxruntime(self) -> str | None:
        """The faster onnxruntime variant (export of the optimized or of the plain graph)."""
        timed = [e for e in ("onnxruntime", "onnxruntime-l0") if self.median(e) is not None]
        return min(timed, key=lambda e: self.median(e)) if timed else None

    @property
    def ratios(self) -> dict[str, float | None]:
        best = self.best_onnxruntime
        return {"ort/graphc": self.ratio(best) if best else None, "torch/graphc": self.ratio("torch"),
                "unfused/fused": self.ratio("graphc-unfused"), "ov/graphc": self.ratio("openvino"),
                "ov-default/graphc": self.ratio("openvino-default")}

    def to_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "threads": self.threads, "load": self.load,
                "best_onnxruntime": self.best_onnxruntime, "ratios": self.ratios,
                "results": {k: v.to_dict() for k, v in self.results.items()}}


@dataclass
class BenchReport:
    """All cases of a run, the machine they ran on and the settings used."""

    cases: list[BenchCase] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    training: list[TrainCase] = field(default_factory=list)
    profiles: list[LayerProfile] = field(default_factory=list)

    def extend(self, other: BenchReport) -> None:
        self.cases.extend(other.cases)
        self.training.extend(other.training)
        self.profiles.extend(other.profiles)
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def to_dict(self) -> dict:
        return {"machine": self.machine, "settings": self.settings, "notes": self.notes,
                "cases": [c.to_dict() for c in self.cases], "training": [t.to_dict() for t in self.training],
                "profiles": [p.to_dict() for p in self.profiles]}

    def to_markdown(self) -> str:
        return format_markdown(self)

    def __str__(self) -> str:
        return self.to_markdown()


# ------------------------------------------------------------------------------------------ machine


def transparent_huge_pages() -> str:
    """This machine's transparent-huge-page setting: ``always``, ``madvise`` or ``never`` (``unknown`` where the
    kernel has none, as off Linux). The runtime's huge-page advice (``gc_options_t.huge_pages``) takes effect
    under the first two only."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else text.strip()


def machine_info() -> dict:
    """Date, CPU model and features, core count, transparent huge pages, load and library versions."""
    info: dict[str, Any] = {"date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                            "cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
                            "python": platform.python_version()}
    try:
        text = open("/proc/cpuinfo").read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["cpu_features"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                                        if f in flags)
    except OSError:
        pass
    info["transparent_huge_pages"] = transparent_huge_pages()
    try:
        info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    import graphc

    versions = {"graphc": graphc.__version__, "numpy": np.__version__}
    for mod in ("onnxruntime", "torch", "llvmlite", "onnx", "openvino"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "not installed"
    info["versions"] = versions
    return info


# ------------------------------------------------------------------------------------------ timing


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


@dataclass
class _Runner:
    """A callable to time, and an optional context entered around each block of calls."""

    name: str
    call: Callable[[], Any]
    context: Callable[[], Any] = nullcontext


# untimed calls before each multi-threaded sample (see :func:`measure`)
SETTLE_S = 0.1


def measure(runners: Sequence[_Runner], repeat: int, *, warmup: int = 2, min_sample_s: float = 0.005,
            pause_s: float = 0.002, settle_s: float = 0.0) -> dict[str, EngineResult]:
    """Interleaved timing: ``repeat`` rounds, each running every runner once (rotated order).

    A runner's sample is the mean over a block of back-to-back calls long enough to last
    ``min_sample_s`` (after one untimed call, or untimed calls for at least ``settle_s``);
    ``pause_s`` between blocks lets spinning worker threads of the previous engine go to sleep.
    On several threads that is not enough: onnxruntime's workers spin on for 30-60 ms after a run,
    holding a core the next engine's workers need (graphc's separable_conv_bn at batch 32 on 2 threads
    measured 2.3 ms for the first 30 ms after an onnxruntime run, 1.25 ms from 60 ms on), hence
    ``settle_s``: every engine alike runs untimed until the previous one's workers have gone to sleep.
    A runner that raises gets its error recorded.
    """
    if repeat < 1:
        raise BenchError(f"repeat must be at least 1, got {repeat}")
    results: dict[str, EngineResult] = {r.name: EngineResult(r.name) for r in runners}
    live: list[_Runner] = []
    for r in runners:
        try:
            with r.context():
                t = np.inf
                for _ in range(max(1, warmup)):
                    t0 = time.perf_counter()
                    r.call()
                    t = min(t, time.perf_counter() - t0)
            results[r.name].calls_per_sample = int(max(1, min(10000, round(min_sample_s / max(t, 1e-7)))))
            live.append(r)
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            results[r.name].error = _first_line(exc)
    for k in range(repeat):
        shift = k % len(live) if live else 0
        for r in live[shift:] + live[:shift]:
            res = results[r.name]
            if res.error is not None:
                continue
            n = res.calls_per_sample
            try:
                with r.context():
                    r.call()
                    settled = time.perf_counter() + settle_s
                    while time.perf_counter() < settled:
                        r.call()
                    t0 = time.perf_counter()
                    for _ in range(n):
                        r.call()
                    elapsed = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - recorded in the report
                res.error = _first_line(exc)
                res.samples_ms.clear()
                continue
            res.samples_ms.append(elapsed / n * 1e3)
            if pause_s:
                time.sleep(pause_s)
    return results


# ------------------------------------------------------------------------------------------ models


@dataclass
class _Subject:
    name: str
    make_model: Callable[[], Any]
    make_inputs: Callable[[np.random.Generator, int], Any] | None


def _subject(model_or_name: Any, seed: int) -> _Subject:
    from graphc import examples
    from graphc.frontend.model import Model

    if isinstance(model_or_name, str):
        examples.get(model_or_name)  # unknown names fail here, listing the examples
        return _Subject(model_or_name, lambda: examples.build(model_or_name, seed=seed),
                        lambda rng, n: examples.inputs(model_or_name, rng, n))
    if isinstance(model_or_name, Model):
        return _Subject(model_or_name.name, lambda: model_or_name, None)
    raise BenchError(f"run_benchmark expects a Model or the name of a bundled example, got "
                     f"{type(model_or_name).__name__}")


def _input_arrays(subject: _Subject, graph, batch: int, seed: int) -> list[np.ndarray]:
    """Inputs in graph order, already in the graph's dtypes (conversion is not timed for anyone)."""
    rng = np.random.default_rng(seed)
    if subject.make_inputs is None:
        from graphc.onnx import random_inputs

        feeds = random_inputs(graph, batch_size=batch, seed=seed)
    else:
        from graphc.api import CompiledModel

        feeds = CompiledModel(graph, "reference").feeds(subject.make_inputs(rng, batch))
    return [np.ascontiguousarray(np.asarray(feeds[n]).astype(graph.type_of(n).dtype)) for n in graph.inputs]


def benchmark_feeds(model_or_name: Any, batch: int, seed: int = 0, *, model: Any = None) -> dict[str, np.ndarray]:
    """The inputs :func:`run_benchmark` times ``model_or_name`` on, by input name: a bundled example's
    own (its free lengths at their design sizes), else ids valid for the embeddings they index and
    normal floats. ``model``: the example already built (else it is built here)."""
    import graphc

    subject = _subject(model_or_name, seed)
    graph = graphc.lower(model if model is not None else subject.make_model())
    return dict(zip(graph.inputs, _input_arrays(subject, graph, batch, seed)))


def _ort_session(proto, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _rel_error(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for a, b in zip(got, want):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
    return worst


def _parse_vs(vs: Iterable[str] | str | None) -> tuple[str, ...]:
    if vs is None:
        return ()
    items = [v.strip() for v in (vs.split(",") if isinstance(vs, str) else vs) if v and v.strip()]
    aliases = {"ort": "onnxruntime", "onnx": "onnxruntime", "pytorch": "torch", "ov": "openvino"}
    out = []
    for v in items:
        v = aliases.get(v.lower(), v.lower())
        if v not in VS_CHOICES:
            raise BenchError(f"unknown engine {v!r} to compare with; choose from {', '.join(VS_CHOICES)}")
        if v not in out:
            out.append(v)
    return tuple(out)


def _ints(values: Iterable[int] | int | str, what: str) -> tuple[int, ...]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    elif isinstance(values, int):
        values = [values]
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise BenchError(f"{what} must be positive integers, got {values!r}") from None
    if not out or any(v < 1 for v in out):
        raise BenchError(f"{what} must be positive integers, got {list(out)}")
    return out


# ------------------------------------------------------------------------------------------ inference


def run_benchmark(model_or_name: Any, batch_sizes: Iterable[int] | int | str = (1, 32),
                  threads: Iterable[int] | int | str = (1, 2), vs: Iterable[str] | str | None = ("onnxruntime",
                                                                                               "torch"),
                  unfused: bool = True, repeat: int = 10, *, seed: int = 0, warmup: int = 2,
                  min_sample_s: float = 0.005, check: bool = True, inputs: Any = None,
                  progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time one model (a graphc Model, or the name of a bundled example) on every engine.

    ``vs``: engines to compare with (``"onnxruntime"``, ``"torch"``, ``"openvino"``: its float32 and
    its default precision, see :mod:`graphc.bench.openvino`); ``unfused``: also time the
    level-0 native build; ``repeat``: measured rounds per engine; ``inputs``: data to use (as
    ``predict`` takes it) instead of random inputs, its batch replacing ``batch_sizes``. Returns a
    :class:`BenchReport` with one :class:`BenchCase` per (batch, threads).
    """
    import graphc

    batch_sizes = _ints(batch_sizes, "batch sizes")
    threads = _ints(threads, "thread counts")
    vs = _parse_vs(vs)
    subject = _subject(model_or_name, seed)
    if inputs is not None:
        subject.make_inputs = lambda rng, n: inputs
        first = next(iter(np.shape(a) for a in (inputs.values() if isinstance(inputs, dict) else
                                                 inputs if isinstance(inputs, (list, tuple)) else [inputs])))
        batch_sizes = (int(first[0]) if first else 1,)
    say = progress or (lambda msg: None)
    report = BenchReport(machine=machine_info(),
                         settings={"repeat": repeat, "warmup": warmup, "min_sample_s": min_sample_s, "seed": seed,
                                   "vs": list(vs), "unfused": unfused})
    model = subject.make_model()
    graph = graphc.lower(model)
    setup_errors: dict[str, str] = {}

    def attempt(engine: str, make):
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            setup_errors[engine] = _first_line(exc)
            return None

    natives: dict[tuple[str, int], Any] = {}
    for t in threads:
        for engine, level in (("graphc", 2),) + ((("graphc-unfused", 0),) if unfused else ()):
            if engine in setup_errors:
                continue
            t0 = time.perf_counter()
            cm = attempt(engine, lambda level=level, t=t: graphc.build(model, target="native", level=level, threads=t))
            if cm is not None:
                natives[engine, t] = cm
                say(f"{subject.name}: {engine} built for {t} thread(s) in {time.perf_counter() - t0:.2f} s")
    sessions: dict[tuple[str, int], Any] = {}
    if "onnxruntime" in vs:
        for engine, level in (("onnxruntime", 2), ("onnxruntime-l0", 0)):
            proto = attempt(engine, lambda level=level: graphc.onnx.export(model, optimize=level))
            for t in threads if proto is not None else ():
                s = attempt(engine, lambda proto=proto, t=t: _ort_session(proto, t))
                if s is not None:
                    sessions[engine, t] = s
    twin = None
    if "torch" in vs:
        from graphc.bench.torch_twin import torch_twin

        twin = attempt("torch", lambda: torch_twin(model))
    ov_proto = None
    if "openvino" in vs:
        from graphc.bench.openvino import openvino_runner

        ov_proto = attempt("openvino", lambda: graphc.onnx.export(model, optimize=2))
        if ov_proto is None:
            setup_errors["openvino-default"] = setup_errors["openvino"]

    reference_checked = False
    for batch in batch_sizes:
        arrays = _input_arrays(subject, graph, batch, seed)
        feeds = dict(zip(graph.inputs, arrays))
        torch_inputs = twin.to_torch(arrays) if twin is not None else None
        for t in threads:
            case = BenchCase(subject.name, batch, t, load=_load())
            runners: list[_Runner] = []
            outputs: dict[str, Callable[[], list[np.ndarray]]] = {}
            for engine in ("graphc",) + (("graphc-unfused",) if unfused else ()):
                cm = natives.get((engine, t))
                if cm is None:
                    case.results[engine] = EngineResult(engine, error=setup_errors.get(engine, "not built"))
                    continue
                runners.append(_Runner(engine, lambda cm=cm, feeds=feeds: cm.run(feeds)))
                outputs[engine] = lambda cm=cm, feeds=feeds: [cm.run(feeds)[o] for o in graph.outputs]
            if "onnxruntime" in vs:
                for engine in ("onnxruntime", "onnxruntime-l0"):
                    s = sessions.get((engine, t))
                    if s is None:
                        case.results[engine] = EngineResult(engine, error=setup_errors.get(engine, "not built"))
                        continue
                    runners.append(_Runner(engine, lambda s=s, feeds=feeds: s.run(None, feeds)))
                    outputs[engine] = lambda s=s, feeds=feeds: s.run(None, feeds)
            for engine, precision in OPENVINO_PRECISIONS.items() if "openvino" in vs else ():
                run = None if ov_proto is None else attempt(engine, lambda p=precision, t=t, xs=arrays: (
                    openvino_runner(ov_proto, graph.inputs, xs, t, p)))
                if run is None:
                    case.results[engine] = EngineResult(engine, error=setup_errors.get(engine, "not built"))
                    continue
                runners.append(_Runner(engine, run))
                outputs[engine] = run
                note = f"{engine}: OpenVINO at {run.precision} (graphc's optimized ONNX export, shapes fixed)"
                if note not in report.notes:
                    report.notes.append(note)
            if "torch" in vs:
                if twin is None:
                    case.results["torch"] = EngineResult("torch", error=setup_errors.get("torch", "no twin"))
                else:
                    import torch

                    torch.set_num_threads(t)
                    runners.append(_Runner("torch", lambda xs=torch_inputs: twin(*xs), torch.inference_mode))
                    outputs["torch"] = lambda xs=torch_inputs: _torch_outputs(twin, xs)
            errors: dict[str, float] = {}
            if check and not reference_checked:
                errors = _check_outputs(graph, feeds, outputs, setup_errors)
                reference_checked = True
            say(f"{subject.name}: batch {batch}, {t} thread(s): timing {', '.join(r.name for r in runners)}")
            settle = SETTLE_S if t > 1 else 0.0
            for engine, res in measure(runners, repeat, warmup=warmup, min_sample_s=min_sample_s,
                                       settle_s=settle).items():
                res.max_rel_error = errors.get(engine)
                if engine in setup_errors and res.error is None and not res.samples_ms:
                    res.error = setup_errors[engine]
                case.results[engine] = res
            report.cases.append(case)
    if "torch" in vs and twin is not None:
        report.notes.append("torch: a plain torch.nn twin (graphc.bench.torch_twin) with the same weights, "
                            "image inputs in NCHW, run eagerly under torch.inference_mode")
    return report


def _torch_outputs(twin, inputs) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return twin.to_numpy(twin(*inputs))


def _check_outputs(graph, feeds, outputs: dict[str, Callable[[], list[np.ndarray]]],
                   setup_errors: dict[str, str]) -> dict[str, float]:
    """Each engine's max relative error against graphc's reference interpreter on the same inputs."""
    from graphc.backends.reference.interpreter import run

    want = run(graph, feeds)
    want_list = [want[o] for o in graph.outputs]
    errors = {}
    for engine, get in outputs.items():
        try:
            errors[engine] = _rel_error(get(), want_list)
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            setup_errors.setdefault(engine, _first_line(exc))
    return errors


# ------------------------------------------------------------------------------------------ formatting


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _cell(res: EngineResult | None) -> str:
    if res is None:
        return "—"
    if res.error is not None:
        return f"**failed**: {res.error.replace('|', '/')[:160]}"
    text = _ms(res.median_ms)
    return text + (" (!)" if res.mismatch else "")


def format_markdown(report: BenchReport, title: str | None = None) -> str:
    """The report as markdown: machine, a summary table, every engine's times, profiles, training."""
    m = report.machine
    v = m.get("versions", {})
    lines = [f"# {title or 'graphc benchmarks'}", "",
             f"- date: {m.get('date', '?')}",
             f"- CPU: {m.get('cpu', '?')} ({m.get('logical_cpus', '?')} logical CPUs; "
             f"{m.get('cpu_features', '')}); load average at start: {m.get('load_average', '?')}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             f"- settings: {report.settings}",
             "- times are medians over the rounds, in ms per call; ratios are quotients of medians "
             "(`ort/graphc` = onnxruntime ms / graphc ms: above 1 means graphc is faster)",
             "- onnxruntime: the faster of graphc's two ONNX exports (`opt`: the optimized graph, `plain`: "
             "the plain lowering); `(!)`: outputs differ from graphc's reference by more than "
             f"{MISMATCH_RTOL:g} (relative)"]
    lines += [f"- {n}" for n in report.notes]
    if report.cases:
        ov = any(e in c.results for c in report.cases for e in OPENVINO_PRECISIONS)
        lines += ["", "| model | batch | threads | graphc ms | onnxruntime ms | ort/graphc | torch ms | torch/graphc "
                  "| unfused ms | unfused/fused |" + (" OpenVINO f32 ms | ov/graphc | OpenVINO default ms | "
                                                      "ov-default/graphc |" if ov else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" * 4 if ov else "")]
        for c in report.cases:
            best = c.best_onnxruntime
            if best is None:
                ort = _cell(c.results.get("onnxruntime"))
            else:
                ort = f"{_cell(c.results[best])} ({'opt' if best == 'onnxruntime' else 'plain'})"
            r = c.ratios
            lines.append(f"| {c.model} | {c.batch} | {c.threads} | {_cell(c.results.get('graphc'))} | {ort} | "
                         f"{_x(r['ort/graphc'])} | {_cell(c.results.get('torch'))} | {_x(r['torch/graphc'])} | "
                         f"{_cell(c.results.get('graphc-unfused'))} | {_x(r['unfused/fused'])} |"
                         + (f" {_cell(c.results.get('openvino'))} | {_x(r['ov/graphc'])} | "
                            f"{_cell(c.results.get('openvino-default'))} | {_x(r['ov-default/graphc'])} |"
                            if ov else ""))
        lines += ["", "Every engine: median ms [interquartile range / median] (calls per sample), "
                  "max relative error vs the reference; load: the 1-minute load average when the case started",
                  "", "| model | batch | threads | load | " + " | ".join(ENGINES) + " |",
                  "|---|---:|---:|---:|" + "---:|" * len(ENGINES)]
        for c in report.cases:
            cells = []
            for e in ENGINES:
                res = c.results.get(e)
                if res is None:
                    cells.append("")
                elif res.error is not None:
                    cells.append("failed")
                else:
                    spread = "" if res.spread is None else f" [{res.spread:.0%}]"
                    err = "" if res.max_rel_error is None else f", err {res.max_rel_error:.1e}"
                    cells.append(f"{_ms(res.median_ms)}{spread} ({res.calls_per_sample}){err}")
            load = "?" if c.load is None else f"{c.load:.1f}"
            lines.append(f"| {c.model} | {c.batch} | {c.threads} | {load} | " + " | ".join(cells) + " |")
    for p in report.profiles:
        lines += ["", p.to_markdown()]
    if report.training:
        lines += ["", format_training(report.training)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ training and
# per-layer profiles live in their own modules; re-exported here.

from graphc.bench.profile import LayerProfile, profile_layers  # noqa: E402
from graphc.bench.training import TrainCase, format_training, run_training_benchmark  # noqa: E402

__all__ = ["run_benchmark", "run_training_benchmark", "profile_layers", "measure", "machine_info", "benchmark_feeds",
           "format_markdown", "BenchReport", "BenchCase", "EngineResult", "TrainCase", "LayerProfile",
           "BenchError", "ENGINES"]
