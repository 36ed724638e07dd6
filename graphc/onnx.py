"""``graphc.onnx``: export models to ONNX and check the export against onnxruntime.

::

    proto = graphc.onnx.export(model, "model.onnx")          # also returns the onnx.ModelProto
    step = graphc.onnx.export_training_step(model, "step.onnx")  # compiled model: one training step
    report = graphc.onnx.verify(model, x, per_layer=True)     # graphc reference vs onnxruntime
    print(report)                                            # per output (and per layer) errors

``model`` is a graphc Model or an IR graph (``graphc.lower(model)``). onnx and onnxruntime are
imported on first use, so ``import graphc`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.ir import dims as _dims
from graphc.ir.graph import Graph
from graphc.ir.types import is_float, is_int

if TYPE_CHECKING:
    import onnx as _onnx

    from graphc.backends.onnx.training_step import TrainingStepExport
    from graphc.backends.onnx.verify import VerifyReport

__all__ = ["export", "export_training_step", "verify", "to_graph", "random_inputs",
           "default_opset"]  # and OnnxExportError (lazy)


def __getattr__(name: str):
    if name == "OnnxExportError":
        from graphc.backends.onnx.context import OnnxExportError

        return OnnxExportError
    raise AttributeError(f"module 'graphc.onnx' has no attribute {name!r}")


def default_opset() -> int:
    """The opset ``export`` uses by default: the newest the installed onnxruntime fully supports."""
    from graphc.backends.onnx.opset import default_opset as _default

    return _default()


def _lowered(model_or_graph: Any) -> Graph:
    from graphc.api import lower, verify
    from graphc.frontend.model import Model

    if isinstance(model_or_graph, Graph):
        graph = model_or_graph
    elif isinstance(model_or_graph, Model):
        graph = lower(model_or_graph)
    else:
        raise TypeError(f"expected a graphc Model or a graphc.ir.Graph, got {type(model_or_graph).__name__}")
    verify(graph)
    return graph


def _optimized(graph: Graph, optimize: bool | int) -> Graph:
    level = 2 if optimize is True else int(optimize)
    if not level:
        return graph
    from graphc.passes import optimize as run

    return run(graph, level=level)


def to_graph(model_or_graph: Any, optimize: bool | int = True) -> Graph:
    """The IR graph that ``export`` writes: the lowering, optimized by ``graphc.passes.optimize`` at
    level ``optimize`` (True: level 2; False or 0: the plain lowering)."""
    return _optimized(_lowered(model_or_graph), optimize)


def export(model_or_graph: Any, path: str | Path | None = None, opset: int | None = None,
           optimize: bool | int = True) -> _onnx.ModelProto:
    """Export a Model or IR graph to ONNX; writes ``path`` when given and returns the ModelProto.

    ``opset`` defaults to the newest that the installed onnxruntime fully supports; an older one
    is used if every op can be expressed in it, else refused naming the op and layer.
    ``optimize`` exports the optimized graph (False: the plain lowering).
    """
    from graphc.backends.onnx.export import export_graph, save

    graph = to_graph(model_or_graph, optimize)
    proto = export_graph(graph, opset)
    if path is not None:
        save(proto, path)
    return proto


def export_training_step(model: Any, path: str | Path | None = None, y: Any = None, sample_weight: Any = None,
                         opset: int | None = None) -> TrainingStepExport:
    """Export compiled ``model``'s whole training step (forward, loss, gradients, optimizer update,
    metrics) as one plain ONNX graph; writes ``path`` when given.

    Inputs: the batch (model inputs, ``<output>_true`` targets, ``<output>_sample_weight`` when
    ``sample_weight`` is given), ``learning_rate``, and the state: every weight, BatchNormalization
    moving statistic, optimizer slot and the optimizer's ``iterations``, under graphc's names, each
    with its current value as the default. Outputs: ``loss``, per-output losses, metric totals, and
    each state input ``w`` updated as ``w.next``. ``y`` (one batch of targets) gives the targets'
    dtypes and shapes (default: those of the steps already run, else float32 shaped like the outputs).
    Training-mode randomness (Dropout...) is refused, naming the layer. Returns a
    :class:`~graphc.backends.onnx.training_step.TrainingStepExport` (the ModelProto, the input and
    output names, the initial state). See :mod:`graphc.backends.onnx.training_step`.
    """
    from graphc.backends.onnx.export import save
    from graphc.backends.onnx.training_step import export_training_step as _export

    result = _export(model, y, sample_weight, opset)
    if path is not None:
        save(result.model, path)
    return result


def verify(model: Any, inputs: Any = None, per_layer: bool = False, rtol: float = 1e-4, atol: float = 1e-5,
           *, opset: int | None = None, optimize: bool | int = True) -> VerifyReport:
    """Run graphc's reference interpreter and onnxruntime on the same inputs and compare.

    ``inputs``: an array, a list in input order or a dict by input name (None: random inputs,
    see :func:`random_inputs`). Returns a :class:`~graphc.backends.onnx.verify.VerifyReport`
    with the max absolute and relative error per output; ``per_layer=True`` also compares
    every intermediate tensor and names the first layer where the two disagree. The outputs
    are compared with the reference run of the plain lowering, so a difference introduced by
    optimization shows too; the per-layer comparison runs the exported graph itself.
    """
    from graphc.backends.onnx.verify import verify_graph

    lowered = _lowered(model)
    graph = _optimized(lowered, optimize)
    feeds = random_inputs(lowered) if inputs is None else _feeds(lowered, inputs)
    return verify_graph(graph, feeds, per_layer=per_layer, rtol=rtol, atol=atol, opset=opset,
                        reference_graph=None if graph is lowered else lowered)


def _feeds(graph: Graph, inputs: Any) -> dict[str, np.ndarray]:
    from graphc.api import CompiledModel

    return CompiledModel(graph, "reference").feeds(inputs)


def random_inputs(model_or_graph: Any, batch_size: int = 2, dims: Mapping[str, int] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every graph input: ``batch`` = ``batch_size``, other free dims from ``dims``
    (default 7); floats standard normal; inputs that index embeddings (int, or float cast to int)
    get ids valid for the smallest table they index, other integer inputs values in [0, 10)."""
    graph = model_or_graph if isinstance(model_or_graph, Graph) else _lowered(model_or_graph)
    rng = np.random.default_rng(seed)
    bindings = {"batch": batch_size, **(dims or {})}
    for name in graph.inputs:
        for d in graph.type_of(name).shape:
            for s in _dims.symbols(d):
                bindings.setdefault(s, 7)
    out = {}
    for name in graph.inputs:
        t = graph.type_of(name)
        shape = t.concrete_shape(bindings)
        bound = _id_bound(graph, name)
        if bound is not None or is_int(t.dtype):
            out[name] = rng.integers(0, bound or 10, size=shape).astype(t.dtype)
        elif is_float(t.dtype):
            out[name] = rng.standard_normal(shape).astype(t.dtype)
        else:
            out[name] = rng.random(shape) < 0.5
    return out


def _id_bound(graph: Graph, value: str) -> int | None:
    """The smallest table an input indexes (through casts and reshapes), or None."""
    bounds, todo, seen = [], [value], set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        for op, idx in graph.consumers(v):
            if op.type == "gather" and idx == 1:
                rows = graph.type_of(op.inputs[0]).shape[0]
                if isinstance(rows, int):
                    bounds.append(rows)
            elif op.type in ("cast", "identity", "reshape", "expand_dims", "squeeze", "slice", "concat"):
                todo.extend(op.outputs)
    return min(bounds) if bounds else None


def error_table(names: list[str] | None = None, batch_sizes: tuple[int, ...] = (1, 3),
                optimize: bool | int = True, seed: int = 0, rtol: float = 1e-4,
                atol: float = 1e-5) -> tuple[str, bool]:
    """Verify bundled examples (``graphc.examples``) against onnxruntime; returns (table, all passed).

    One row per model, batch size and, for models with free sequence lengths, two lengths (the
    example's own and 7 more): the max absolute and relative error over the outputs.
    ``python -m graphc.backends.onnx`` prints it.
    """
    from graphc import examples
    from graphc.backends.onnx.opset import default_opset as _default
    from graphc.backends.onnx.verify import _format
    from graphc.backends.reference.interpreter import bind_inputs

    rows = [("model", "batch", "free dims", "outputs", "max abs err", "max rel err", "ok")]
    all_ok = True
    for name in names or examples.names():
        model = examples.build(name, seed=seed)
        graph = _lowered(model)
        free = sorted({s for n in graph.inputs for d in graph.type_of(n).shape for s in _dims.symbols(d)} - {"batch"})
        own = bind_inputs(graph, _feeds(graph, examples.inputs(name, np.random.default_rng(seed), 1)))[1]
        variants = [{s: own[s] for s in free}, {s: own[s] + 7 for s in free}] if free else [{}]
        for batch in batch_sizes:
            for dims in variants:
                x = random_inputs(graph, batch, dims, seed=seed)
                report = verify(model, x, rtol=rtol, atol=atol, optimize=optimize)
                all_ok &= report.ok
                rows.append((name, str(batch), ", ".join(f"{k}={v}" for k, v in dims.items()) or "-",
                             str(len(report.outputs)), f"{report.max_abs_error:.3g}", f"{report.max_rel_error:.3g}",
                             "yes" if report.ok else "NO"))
    head = (f"graphc reference vs onnxruntime: bundled examples, opset {_default()}, optimize={optimize}, "
            f"rtol {rtol:g}, atol {atol:g}")
    return "\n".join([head, *_format(rows)]), all_ok
