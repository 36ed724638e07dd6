"""Training-step comparison: one graphc training step against one PyTorch eager step.

Both sides train the same model from the same weights on the same batch with the same loss
(mean squared error on every output, summed) and optimizer (RMSprop, learning rate 1e-3,
rho 0.9, epsilon 1e-7):

- ``graphc``: ``model.train_on_batch(x, y)`` after ``model.compile("rmsprop", "mse")``, the path
  ``fit`` takes, with the step graphs on the reference interpreter (the default);
- ``graphc-native-step``: the same after ``graphc.build(model, target="native", training=True,
  threads=T)``, which compiles the step graphs to native code;
- ``torch``: the model's ``torch.nn`` twin (:mod:`graphc.bench.torch_twin`) in train mode:
  forward, loss, ``backward()``, ``RMSprop.step()``.

The first step's losses are compared (same weights, same data: they must agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.bench import (
    BenchReport,
    EngineResult,
    _first_line,
    _input_arrays,
    _ints,
    _ms,
    _Runner,
    _subject,
    _x,
    machine_info,
    measure,
)

TRAIN_ENGINES = ("graphc", "graphc-native-step", "torch")


@dataclass
class TrainCase:
    """Training steps of one model at one batch size and thread count."""

    model: str
    batch: int
    threads: int
    results: dict[str, EngineResult] = field(default_factory=dict)
    first_loss: dict[str, float] = field(default_factory=dict)

    def ratio(self, engine: str, base: str = "graphc") -> float | None:
        a, b = self.results.get(engine), self.results.get(base)
        if a is None or b is None or a.median_ms is None or b.median_ms is None or b.median_ms <= 0:
            return None
        return a.median_ms / b.median_ms

    def to_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "threads": self.threads, "first_loss": self.first_loss,
                "ratios": {"torch/graphc": self.ratio("torch"), "torch/graphc-native-step":
                           self.ratio("torch", "graphc-native-step")},
                "results": {k: v.to_dict() for k, v in self.results.items()}}


def _cell(res: EngineResult | None) -> str:
    if res is None:
        return "—"
    if res.error is not None:
        return f"**failed**: {res.error.replace('|', '/')[:160]}"
    spread = "" if res.spread is None else f" [{res.spread:.0%}]"
    return _ms(res.median_ms) + spread


def format_training(cases: list[TrainCase]) -> str:
    lines = ["## Training step (forward, MSE loss, backward, RMSprop update)", "",
             "| model | batch | threads | graphc train_on_batch ms | graphc native step ms | torch eager ms "
             "| torch/graphc (faster graphc) | first loss: train_on_batch / native / torch |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in cases:
        best = min((e for e in ("graphc", "graphc-native-step") if c.results.get(e) and c.results[e].ok),
                   key=lambda e: c.results[e].median_ms, default="graphc")
        losses = " / ".join(f"{c.first_loss[e]:.6g}" if e in c.first_loss else "—" for e in TRAIN_ENGINES)
        lines.append(f"| {c.model} | {c.batch} | {c.threads} | {_cell(c.results.get('graphc'))} | "
                     f"{_cell(c.results.get('graphc-native-step'))} | {_cell(c.results.get('torch'))} | "
                     f"{_x(c.ratio('torch', best))} | {losses} |")
    return "\n".join(lines)


def _targets(shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.random(shape, dtype=np.float32) for shape in shapes]


def run_training_benchmark(model_or_name: Any, batch_sizes: Iterable[int] | int | str = (32,),
                           threads: Iterable[int] | int | str = (1, 2), repeat: int = 5, *, seed: int = 0,
                           warmup: int = 1, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time training steps of one model (a Model or a bundled example's name); see the module docstring."""
    import graphc

    batch_sizes = _ints(batch_sizes, "batch sizes")
    threads = _ints(threads, "thread counts")
    subject = _subject(model_or_name, seed)
    say = progress or (lambda msg: None)
    report = BenchReport(machine=machine_info(), settings={"repeat": repeat, "warmup": warmup, "seed": seed,
                                                           "training": "mse on every output, rmsprop lr 1e-3"})
    report.notes.append("training: `graphc train_on_batch` runs the step graphs on the reference interpreter "
                        "(NumPy; its BLAS threads are not limited by the thread count), `graphc native step` after "
                        "graphc.build(model, target='native', training=True, threads=T)")
    for batch in batch_sizes:
        for t in threads:
            case = TrainCase(subject.name, batch, t)
            # Each engine trains its own copy of the model from the same initial weights.
            model = subject.make_model()
            graph = graphc.lower(model)
            arrays = _input_arrays(subject, graph, batch, seed)
            rng = np.random.default_rng(seed + 1)
            out_shapes = _output_shapes(graph, arrays)
            targets = _targets(out_shapes, rng)
            y = targets[0] if len(targets) == 1 else targets
            runners = []
            # The twin copies the weights first: the graphc steps below change them.
            torch_step = _torch_step(subject, arrays, targets, t, case)
            native = _native_step(subject, arrays, y, t, case)
            step = _graphc_step(model, arrays, y, case)
            if step is not None:
                runners.append(_Runner("graphc", step))
            if native is not None:
                runners.append(_Runner("graphc-native-step", native))
            if torch_step is not None:
                import torch

                runners.append(_Runner("torch", torch_step, lambda t=t: _TorchThreads(torch, t)))
            say(f"{subject.name}: training, batch {batch}, {t} thread(s): timing {', '.join(r.name for r in runners)}")
            for engine, res in measure(runners, repeat, warmup=warmup, min_sample_s=0.0).items():
                case.results[engine] = res
            report.training.append(case)
    return report


class _TorchThreads:
    """Context: PyTorch's intra-op thread count set for a block of calls."""

    def __init__(self, torch, threads: int):
        self.torch, self.threads = torch, threads

    def __enter__(self):
        self.torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        return None


def _output_shapes(graph, arrays) -> list[tuple[int, ...]]:
    """The outputs' shapes for these inputs (free dims bound from the input arrays)."""
    from graphc.ir import dims as _dims

    bindings: dict[str, int] = {}
    for name, a in zip(graph.inputs, arrays):
        for d, n in zip(graph.type_of(name).shape, a.shape):
            if isinstance(d, str) and set(_dims.symbols(d)) == {d}:
                bindings[d] = int(n)
    return [tuple(graph.type_of(o).concrete_shape(bindings)) for o in graph.outputs]


def _graphc_step(model, arrays, y, case: TrainCase):
    try:
        model.compile(optimizer="rmsprop", loss="mse")
        x = arrays[0] if len(arrays) == 1 else list(arrays)
        first = model.train_on_batch(x, y)
        case.first_loss["graphc"] = float(np.ravel(first)[0])
        return lambda: model.train_on_batch(x, y)
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        case.results["graphc"] = EngineResult("graphc", error=_first_line(exc))
        return None


def _native_step(subject, arrays, y, threads: int, case: TrainCase):
    import graphc

    try:
        model = subject.make_model()
        model.compile(optimizer="rmsprop", loss="mse")
        graphc.build(model, target="native", training=True, threads=threads)
        x = arrays[0] if len(arrays) == 1 else list(arrays)
        first = model.train_on_batch(x, y)
        case.first_loss["graphc-native-step"] = float(np.ravel(first)[0])
        return lambda: model.train_on_batch(x, y)
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        case.results["graphc-native-step"] = EngineResult("graphc-native-step", error=_first_line(exc))
        return None


def _torch_step(subject, arrays, targets, threads: int, case: TrainCase):
    try:
        import torch
        from torch.nn import functional

        from graphc.bench.torch_twin import torch_twin

        twin = torch_twin(subject.make_model(), trainable=True)
        inputs = twin.to_torch(arrays)
        ys = [torch.from_numpy(np.ascontiguousarray(np.moveaxis(t, -1, 1) if layout == "cf" and rank >= 3 else t))
              for t, (layout, rank) in zip(targets, twin.output_layouts)]
        opt = torch.optim.RMSprop(twin.module.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        torch.set_num_threads(threads)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            out = twin(*inputs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            loss = sum(functional.mse_loss(o.reshape(yy.shape), yy) for o, yy in zip(outs, ys))
            loss.backward()
            opt.step()
            return loss

        case.first_loss["torch"] = float(step().detach())
        return step
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        case.results["torch"] = EngineResult("torch", error=_first_line(exc))
        return None


__all__ = ["TrainCase", "run_training_benchmark", "format_training", "TRAIN_ENGINES"]
