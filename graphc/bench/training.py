"""Training-step comparison: one graphc training step against PyTorch and JAX doing the same work.

Every engine trains the same model from the same weights on the same batch with the same loss
(mean squared error on every output, summed) and optimizer (RMSprop, learning rate 1e-3, rho
0.9, epsilon 1e-7), with the same thread count:

- ``graphc``: ``model.train_on_batch(x, y)`` after ``model.compile("rmsprop", "mse")`` with the
  step graphs on the reference interpreter (NumPy);
- ``graphc-native-step``: the same after ``graphc.build(model, "native", training=True,
  threads=T)``: the step compiled to native code, its state held by the instance (the public path);
- ``graphc-native-raw``: that step's ``Instance.train_step(inputs, targets)`` called directly on
  prepared arrays: the library call without ``train_on_batch``'s Python (data checks, logs);
- ``torch``: the model's ``torch.nn`` twin (:mod:`graphc.bench.torch_twin`) in train mode, eager:
  ``zero_grad``, forward, ``mse_loss``, ``backward()``, ``RMSprop.step()``;
- ``torch-compile``: the same with forward and loss under ``torch.compile`` (default mode;
  AOTAutograd compiles the backward with it) and ``RMSprop.step`` under ``torch.compile``, as
  PyTorch's compiled-optimizer recipe does; compiled afresh for each thread count;
- ``jax``: Keras 3 on the jax backend in its own process (:mod:`graphc.bench.jax_twin`): the
  ``.keras`` file graphc writes, one ``jax.jit`` step (``stateless_call``, ``value_and_grad``,
  ``RMSprop.stateless_apply``, state donated).

Timing: each engine is set up and run once (its "compile" time: the first step's wall time,
compilation included, with graphc's library cache and inductor's caches empty), warmed up, then
measured in rounds; each round gives every engine, in rotated order, one untimed step and a block
of back-to-back steps lasting ``min_sample_s`` (the JAX child times its own block), so that load
drifting on a shared machine hits all engines alike. Times are medians over rounds. The first
step's losses (same weights, same batch) must agree across engines within :data:`LOSS_RTOL`: the
engines do the same work.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphc.bench import (
    BenchError,
    BenchReport,
    EngineResult,
    _first_line,
    _input_arrays,
    _ints,
    _load,
    _ms,
    _subject,
    _x,
    machine_info,
)

TRAIN_ENGINES = ("graphc", "graphc-native-step", "graphc-native-raw", "torch", "torch-compile", "jax")
DEFAULT_TRAIN_ENGINES = ("graphc", "graphc-native-step", "graphc-native-raw", "torch")
OTHER_ENGINES = ("torch", "torch-compile", "jax")
GRAPHC_ENGINES = ("graphc-native-step", "graphc-native-raw")
LOSS_RTOL = 1e-3
ENGINE_TITLES = {"graphc": "graphc train_on_batch (reference)", "graphc-native-step": "graphc native train_on_batch",
                 "graphc-native-raw": "graphc Instance.train_step", "torch": "torch eager",
                 "torch-compile": "torch.compile", "jax": "jax jit (Keras 3)"}
LEARNING_RATE, RHO, EPSILON = 1e-3, 0.9, 1e-7


@dataclass
class TrainCase:
    """Training steps of one model at one batch size and thread count."""

    model: str
    batch: int
    threads: int
    results: dict[str, EngineResult] = field(default_factory=dict)
    first_loss: dict[str, float] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)
    load: float | None = None  # 1-minute load average when the case started
    versions: dict[str, str] = field(default_factory=dict)  # of engines that run in another process

    def ratio(self, engine: str, base: str = "graphc") -> float | None:
        """``median(engine) / median(base)``."""
        a, b = self.results.get(engine), self.results.get(base)
        if a is None or b is None or a.median_ms is None or b.median_ms is None or b.median_ms <= 0:
            return None
        return a.median_ms / b.median_ms

    @property
    def best_other(self) -> str | None:
        """The fastest of PyTorch eager, torch.compile and JAX on this case."""
        timed = [e for e in OTHER_ENGINES if e in self.results and self.results[e].ok]
        return min(timed, key=lambda e: self.results[e].median_ms) if timed else None

    def vs_best(self, engine: str = "graphc-native-step") -> float | None:
        """``median(engine) / median(best other)``: below 1 means graphc is faster than all of them."""
        best = self.best_other
        return self.ratio(engine, best) if best else None

    @property
    def loss_spread(self) -> float | None:
        """Largest relative difference between two engines' first-step losses."""
        losses = list(self.first_loss.values())
        if len(losses) < 2:
            return None
        ref = max(abs(v) for v in losses) or 1.0
        return (max(losses) - min(losses)) / ref

    @property
    def losses_agree(self) -> bool | None:
        spread = self.loss_spread
        return None if spread is None else spread <= LOSS_RTOL

    def to_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "threads": self.threads, "load": self.load,
                "first_loss": self.first_loss, "loss_spread": self.loss_spread, "losses_agree": self.losses_agree,
                "compile_s": self.compile_s, "best_other": self.best_other,
                "ratios": {"graphc-native-step/best": self.vs_best("graphc-native-step"),
                           "graphc-native-raw/best": self.vs_best("graphc-native-raw"),
                           "torch/graphc": self.ratio("torch"),
                           "torch/graphc-native-step": self.ratio("torch", "graphc-native-step")},
                "results": {k: v.to_dict() for k, v in self.results.items()}}


# ------------------------------------------------------------------------------------------ formatting


def _cell(res: EngineResult | None) -> str:
    if res is None:
        return "—"
    if res.error is not None:
        return f"**failed**: {res.error.replace('|', '/')[:160]}"
    spread = "" if res.spread is None else f" [{res.spread:.0%}]"
    return _ms(res.median_ms) + spread


def _engines_in(cases: Sequence[TrainCase]) -> list[str]:
    return [e for e in TRAIN_ENGINES if any(e in c.results for c in cases)]


def format_training(cases: list[TrainCase]) -> str:
    """The training cases as markdown: step times and ratios, first losses, compile times."""
    engines = _engines_in(cases)
    lines = ["## Training step (forward, MSE loss, backward, RMSprop update)", "",
             "Median ms per step [interquartile range / median]; `native/best` = graphc native `train_on_batch` ms "
             "/ the fastest of torch eager, torch.compile and jax ms, `raw/best` the same for "
             "`Instance.train_step`: **below 1 means graphc is faster**.", "",
             "| model | batch | threads | load | " + " | ".join(f"{ENGINE_TITLES[e]} ms" for e in engines)
             + " | best other | native/best | raw/best | first losses agree |",
             "|---|---:|---:|---:|" + "---:|" * len(engines) + "---|---:|---:|---|"]
    for c in cases:
        agree = c.losses_agree
        check = "—" if agree is None else f"{'yes' if agree else '**no**'} ({c.loss_spread:.1e})"
        load = "?" if c.load is None else f"{c.load:.1f}"
        lines.append(f"| {c.model} | {c.batch} | {c.threads} | {load} | "
                     + " | ".join(_cell(c.results.get(e)) for e in engines)
                     + f" | {c.best_other or '—'} | {_x(c.vs_best('graphc-native-step'))} | "
                       f"{_x(c.vs_best('graphc-native-raw'))} | {check} |")
    lines += ["", "First step's loss per engine (same weights, same batch) and compile time (the first step's wall "
              "time, compilation included, caches empty, s):", "",
              "| model | threads | " + " | ".join(f"{e} loss" for e in engines) + " | "
              + " | ".join(f"{e} compile s" for e in engines) + " |",
              "|---|---:|" + "---:|" * (2 * len(engines))]
    for c in cases:
        losses = [f"{c.first_loss[e]:.7g}" if e in c.first_loss else "—" for e in engines]
        compiles = [f"{c.compile_s[e]:.2f}" if e in c.compile_s else "—" for e in engines]
        lines.append(f"| {c.model} | {c.threads} | " + " | ".join(losses + compiles) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ timing


@dataclass
class _Engine:
    """A training step to time: ``sample(n)`` is the seconds of ``n`` back-to-back steps after one untimed step."""

    name: str
    sample: Callable[[int], float]
    close: Callable[[], None] = lambda: None


def _local_engine(name: str, call: Callable[[], Any], context: Callable[[], Any] = nullcontext) -> _Engine:
    def sample(n: int) -> float:
        with context():
            call()
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            return time.perf_counter() - t0
    return _Engine(name, sample)


def measure_steps(engines: Sequence[_Engine], repeat: int, *, warmup: int = 1, min_sample_s: float = 0.02,
                  pause_s: float = 0.002) -> dict[str, EngineResult]:
    """Interleaved rounds over ``engines`` (rotated order each round); an engine that raises gets its error."""
    if repeat < 1:
        raise BenchError(f"repeat must be at least 1, got {repeat}")
    results = {e.name: EngineResult(e.name) for e in engines}
    live: list[_Engine] = []
    for e in engines:
        try:
            single = min(e.sample(1) for _ in range(max(1, warmup)))
            results[e.name].calls_per_sample = int(max(1, min(10000, round(min_sample_s / max(single, 1e-7)))))
            live.append(e)
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            results[e.name].error = _first_line(exc)
    for k in range(repeat):
        shift = k % len(live) if live else 0
        for e in live[shift:] + live[:shift]:
            res = results[e.name]
            if res.error is not None:
                continue
            n = res.calls_per_sample
            try:
                res.samples_ms.append(e.sample(n) / n * 1e3)
            except Exception as exc:  # noqa: BLE001 - recorded in the report
                res.error = _first_line(exc)
                res.samples_ms.clear()
            if pause_s:
                time.sleep(pause_s)
    return results


# ------------------------------------------------------------------------------------------ engines


class _TorchThreads:
    """Context: PyTorch's intra-op thread count set for a block of calls."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        import torch

        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        return None


@dataclass
class _Setup:
    """What every engine of one case starts from."""

    subject: Any
    arrays: list[np.ndarray]
    targets: list[np.ndarray]
    threads: int
    case: TrainCase
    workdir: Path

    @property
    def x(self):
        return self.arrays[0] if len(self.arrays) == 1 else list(self.arrays)

    @property
    def y(self):
        return self.targets[0] if len(self.targets) == 1 else list(self.targets)


def _attempt(setup: _Setup, names: Sequence[str], make: Callable[[], list[_Engine]]) -> list[_Engine]:
    """Build engines ``names``; a failure is recorded for each of them (with its first line)."""
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        for name in names:
            setup.case.results[name] = EngineResult(name, error=_first_line(exc))
        return []


def _first(setup: _Setup, name: str, run_first: Callable[[], Any], t0: float) -> None:
    loss = run_first()
    setup.case.compile_s[name] = time.perf_counter() - t0
    setup.case.first_loss[name] = float(np.ravel(np.asarray(loss, dtype=np.float64))[0])


def _graphc_reference(setup: _Setup) -> list[_Engine]:
    model = setup.subject.make_model()
    model.compile(optimizer="rmsprop", loss="mse")
    _first(setup, "graphc", lambda: model.train_on_batch(setup.x, setup.y), time.perf_counter())
    return [_local_engine("graphc", lambda: model.train_on_batch(setup.x, setup.y))]


@contextmanager
def _cold_library_cache(workdir: Path):
    """graphc's cache of compiled model libraries empty for one block, so that its compile time is a
    cold one (the C runtime, built once per machine, is kept: linked in from the real cache)."""
    from graphc.backends.llvm.cache import cache_dir

    real, cold = cache_dir(), workdir / "graphc-cache"
    cold.mkdir()
    if (real / "runtime").is_dir():
        (cold / "runtime").symlink_to(real / "runtime", target_is_directory=True)
    before = os.environ.get("GRAPHC_CACHE_DIR")
    os.environ["GRAPHC_CACHE_DIR"] = str(cold)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRAPHC_CACHE_DIR", None)
        else:
            os.environ["GRAPHC_CACHE_DIR"] = before


def _graphc_native(setup: _Setup, wanted: Sequence[str]) -> list[_Engine]:
    """The native step through ``train_on_batch`` and, on the same instance, through ``Instance.train_step``."""
    import graphc

    t0 = time.perf_counter()
    model = setup.subject.make_model()
    model.compile(optimizer="rmsprop", loss="mse")
    graphc.build(model, target="native", training=True, threads=setup.threads)
    x, y = setup.x, setup.y
    with _cold_library_cache(setup.workdir):
        first_loss = np.ravel(model.train_on_batch(x, y))[0]
    for name in wanted:
        setup.case.compile_s[name] = time.perf_counter() - t0
        setup.case.first_loss[name] = float(first_loss)
    engines = []
    if "graphc-native-step" in wanted:
        engines.append(_local_engine("graphc-native-step", lambda: model.train_on_batch(x, y)))
    if "graphc-native-raw" in wanted:
        engines += _attempt(setup, ["graphc-native-raw"], lambda: [_raw_step(model, x, y)])
    return engines


def _raw_step(model, x, y) -> _Engine:
    """``Instance.train_step`` of the model's native training step on arrays prepared once."""
    from graphc.training.loop import standardize_x, standardize_y

    trainer = model._graphc_trainer
    step = next(s for s in trainer._steps.values() if s.training)
    compiled = trainer.runner.compiled(step)
    if not compiled.library.has_train_step:
        raise BenchError("the native step library has no gc_instance_train_step")
    feeds = step._target_feeds(standardize_x(model, x), standardize_y(model, y))
    ins = [np.ascontiguousarray(feeds[v], dtype=compiled.dtypes[v]) for v in compiled.model_inputs]
    tgs = [np.ascontiguousarray(feeds[v], dtype=compiled.dtypes[v]) for v in compiled.targets]
    instance = compiled.instance
    return _local_engine("graphc-native-raw", lambda: instance.train_step(ins, tgs))


def _torch_parts(setup: _Setup):
    """(twin, inputs, targets, optimizer) of a fresh twin in train mode, targets in the twin's layout."""
    import torch

    from graphc.bench.torch_twin import torch_twin

    twin = torch_twin(setup.subject.make_model(), trainable=True)
    inputs = twin.to_torch(setup.arrays)
    ys = [torch.from_numpy(np.ascontiguousarray(np.moveaxis(t, -1, 1) if layout == "cf" and rank >= 3 else t))
          for t, (layout, rank) in zip(setup.targets, twin.output_layouts)]
    params = list(twin.module.parameters())
    # A model without weights (merge) trains nothing: its step is the forward pass and the loss.
    opt = torch.optim.RMSprop(params, lr=LEARNING_RATE, alpha=RHO, eps=EPSILON) if params else None
    return twin, inputs, ys, opt


def _mse_sum(outputs, ys):
    from torch.nn import functional

    outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return sum(functional.mse_loss(o.reshape(y.shape), y) for o, y in zip(outs, ys))


def _torch_eager(setup: _Setup) -> list[_Engine]:
    twin, inputs, ys, opt = _torch_parts(setup)

    def step():
        if opt is None:
            return _mse_sum(twin(*inputs), ys)
        opt.zero_grad(set_to_none=True)
        loss = _mse_sum(twin(*inputs), ys)
        loss.backward()
        opt.step()
        return loss.detach()

    with _TorchThreads(setup.threads):
        _first(setup, "torch", step, time.perf_counter())
    return [_local_engine("torch", step, lambda: _TorchThreads(setup.threads))]


def _torch_compiled(setup: _Setup) -> list[_Engine]:
    import torch

    torch._dynamo.reset()  # inductor bakes the thread count into its kernels: compile afresh
    twin, inputs, ys, opt = _torch_parts(setup)
    module = twin.module

    @torch.compile
    def forward_loss(*xs):
        return _mse_sum(module(*xs), ys)

    @torch.compile
    def optimizer_step():
        opt.step()

    def step():
        if opt is None:
            return forward_loss(*inputs)
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(*inputs)
        loss.backward()
        optimizer_step()
        return loss.detach()

    # no on-disk cache of earlier runs' kernels: the compile time is a cold one
    with _TorchThreads(setup.threads), torch._inductor.config.patch(force_disable_caches=True):
        _first(setup, "torch-compile", step, time.perf_counter())
    return [_local_engine("torch-compile", step, lambda: _TorchThreads(setup.threads))]


def _jax(setup: _Setup) -> list[_Engine]:
    from graphc.bench.jax_twin import JaxStep

    path = setup.workdir / f"{setup.subject.name}.keras"
    setup.subject.make_model().save(str(path))
    child = JaxStep(path, setup.arrays, setup.targets, setup.threads)
    try:
        info = child.start()
    except Exception:
        child.close()
        raise
    setup.case.compile_s["jax"] = info["compile_s"]
    setup.case.first_loss["jax"] = float(info["first_loss"])
    setup.case.versions.update(info.get("versions", {}))
    return [_Engine("jax", child.sample, child.close)]


# ------------------------------------------------------------------------------------------ the benchmark


def _output_shapes(graph, arrays) -> list[tuple[int, ...]]:
    """The outputs' shapes for these inputs (free dims bound from the input arrays)."""
    from graphc.ir import dims as _dims

    bindings: dict[str, int] = {}
    for name, a in zip(graph.inputs, arrays):
        for d, n in zip(graph.type_of(name).shape, a.shape):
            if isinstance(d, str) and set(_dims.symbols(d)) == {d}:
                bindings[d] = int(n)
    return [tuple(graph.type_of(o).concrete_shape(bindings)) for o in graph.outputs]


def _build_engines(setup: _Setup, wanted: Sequence[str]) -> list[_Engine]:
    """Every wanted engine that could be set up (the others' errors recorded in the case)."""
    built: list[_Engine] = []
    if "graphc" in wanted:
        built += _attempt(setup, ["graphc"], lambda: _graphc_reference(setup))
    native = [e for e in GRAPHC_ENGINES if e in wanted]
    if native:
        built += _attempt(setup, native, lambda: _graphc_native(setup, native))
    for name, make in (("torch", _torch_eager), ("torch-compile", _torch_compiled), ("jax", _jax)):
        if name in wanted:
            built += _attempt(setup, [name], lambda make=make: make(setup))
    return built


def _parse_engines(engines: Iterable[str] | str | None) -> tuple[str, ...]:
    if engines is None:
        return DEFAULT_TRAIN_ENGINES
    items = [e.strip() for e in (engines.split(",") if isinstance(engines, str) else engines) if e and e.strip()]
    unknown = [e for e in items if e not in TRAIN_ENGINES]
    if unknown or not items:
        raise BenchError(f"unknown training engine(s) {unknown}; choose from {', '.join(TRAIN_ENGINES)}")
    return tuple(e for e in TRAIN_ENGINES if e in items)


def run_training_benchmark(model_or_name: Any, batch_sizes: Iterable[int] | int | str = (32,),
                           threads: Iterable[int] | int | str = (1, 2), repeat: int = 5, *, seed: int = 0,
                           warmup: int = 1, min_sample_s: float = 0.0,
                           engines: Iterable[str] | str | None = None,
                           progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time training steps of one model (a Model or a bundled example's name) on ``engines``
    (default :data:`DEFAULT_TRAIN_ENGINES`; every one: :data:`TRAIN_ENGINES`); see the module docstring."""
    import graphc

    batch_sizes = _ints(batch_sizes, "batch sizes")
    threads = _ints(threads, "thread counts")
    wanted = _parse_engines(engines)
    subject = _subject(model_or_name, seed)
    say = progress or (lambda msg: None)
    report = BenchReport(machine=machine_info(),
                         settings={"repeat": repeat, "warmup": warmup, "min_sample_s": min_sample_s, "seed": seed,
                                   "engines": list(wanted), "training": "mse on every output, summed; rmsprop "
                                   f"lr {LEARNING_RATE:g} rho {RHO:g} epsilon {EPSILON:g}"})
    for batch in batch_sizes:
        graph = graphc.lower(subject.make_model())
        arrays = _input_arrays(subject, graph, batch, seed)
        rng = np.random.default_rng(seed + 1)
        targets = [rng.random(shape, dtype=np.float32) for shape in _output_shapes(graph, arrays)]
        for t in threads:
            case = TrainCase(subject.name, batch, t, load=_load())
            with tempfile.TemporaryDirectory(prefix="graphc-train-bench-") as tmp:
                setup = _Setup(subject, arrays, targets, t, case, Path(tmp))
                say(f"{subject.name}: training, batch {batch}, {t} thread(s): setting up {', '.join(wanted)}")
                built = _build_engines(setup, wanted)
                say(f"{subject.name}: training, batch {batch}, {t} thread(s): timing "
                    f"{', '.join(e.name for e in built)}")
                try:
                    for name, res in measure_steps(built, repeat, warmup=warmup, min_sample_s=min_sample_s).items():
                        case.results[name] = res
                finally:
                    for e in built:
                        e.close()
            report.training.append(case)
    report.notes += _notes(report.training, wanted)
    return report


def _notes(cases: Sequence[TrainCase], wanted: Sequence[str]) -> list[str]:
    notes = ["training: every engine trains its own copy of the model from the same weights on the same batch "
             f"(MSE on every output, summed; RMSprop lr {LEARNING_RATE:g}, rho {RHO:g}, epsilon {EPSILON:g}); "
             f"first-step losses must agree within {LOSS_RTOL:g} (relative)"]
    if "graphc" in wanted:
        notes.append("training: `graphc train_on_batch (reference)` runs the step graphs on the NumPy reference "
                     "interpreter (its BLAS threads are not limited by the thread count)")
    if "graphc-native-raw" in wanted:
        notes.append("training: `graphc Instance.train_step` calls the native step library's instance directly on "
                     "prepared arrays (the C call and output copies, without train_on_batch's Python)")
    if "torch-compile" in wanted:
        notes.append("training: torch.compile (mode default, inductor) of forward+loss (backward compiled by "
                     "AOTAutograd) and of RMSprop.step, compiled afresh per thread count")
    if "jax" in wanted:
        versions = next((c.versions for c in cases if c.versions), {})
        which = ", ".join(f"{k} {v}" for k, v in versions.items()) or "not started"
        notes.append(f"training: jax ({which}): Keras 3 on the jax backend in a child process "
                     f"(interpreter {os.environ.get('GRAPHC_BENCH_JAX_PYTHON') or 'this one'}), the model from the "
                     ".keras file graphc writes, one jax.jit step (stateless_call, value_and_grad, "
                     "RMSprop.stateless_apply, state donated); 1 thread: CPU affinity of one CPU while XLA starts "
                     "and XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'")
    return notes


__all__ = ["TrainCase", "run_training_benchmark", "format_training", "measure_steps", "TRAIN_ENGINES",
           "DEFAULT_TRAIN_ENGINES", "OTHER_ENGINES", "LOSS_RTOL"]
