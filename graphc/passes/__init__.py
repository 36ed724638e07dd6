"""The optimizer: the pass manager, the passes (one module each) and the pipelines per level.

``optimize(graph, level)`` returns an optimized copy; ``run_pipeline`` also returns the
:class:`PassReport` (timings, what fired, op counts) and takes the manager's options
(verification, IR printing before/after passes, disabled passes).

Levels: 0 none; 1 simplification (no-op removal, constant folding, CSE, DCE to a fixed
point); 2 adds zero-padding folding into convolutions and pools, BatchNorm folding, 1x1
convolutions as matmuls, linear-chain folding, separable-conv fusion, epilogue fusion (bias,
activation, residual add) and sibling merging; 3 also folds linear chains that add arithmetic.
Elementwise-chain fusion (``fuse_elementwise``) runs on training-step graphs
(``graphc.training.step_optimizer``), not in these levels: after epilogue fusion the bundled
models keep almost no elementwise chain at inference, and it would hide additions from the
quantizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from graphc.ir.graph import Graph
from graphc.passes import (  # noqa: F401  (registration)
    constant_fold,
    conv1x1,
    cse,
    dce,
    fold_batchnorm,
    fold_linear,
    fold_pad,
    fuse_elementwise,
    fuse_epilogue,
    fuse_separable,
    merge_siblings,
    noops,
)
from graphc.passes.manager import (
    PASSES,
    FixedPoint,
    Pass,
    PassError,
    PassManager,
    PassReport,
    Pipeline,
    get_pass,
    note,
    register_pass,
    working_on,
)
from graphc.passes.products import fusion_summary

LEVELS = (0, 1, 2, 3)


def _simplify() -> FixedPoint:
    return FixedPoint(Pipeline("simplify", ["remove_noops", "cse", "constant_fold", "dce"]))


def pipeline_for_level(level: int) -> Pipeline:
    """The pass pipeline of optimization level ``level`` (0 to 3)."""
    if level not in LEVELS:
        raise ValueError(f"optimization level must be one of {LEVELS}, got {level!r}")
    if level == 0:
        return Pipeline("O0", [])
    if level == 1:
        return Pipeline("O1", [_simplify()])
    linear = "fold_linear_chains_aggressive" if level == 3 else "fold_linear_chains"
    return Pipeline(f"O{level}", [
        _simplify(),
        "fold_pad",
        "fold_batchnorm",
        "conv1x1_to_matmul",
        FixedPoint(Pipeline("linear", [linear])),
        "fuse_separable_conv",
        "fuse_epilogue",
        "merge_sibling_products",
        _simplify(),
    ])


def run_pipeline(graph: Graph, level: int = 2, *, verify: bool | None = None,
                 print_before: Iterable[str] | None = None, print_after: Iterable[str] | None = None,
                 disable: Iterable[str] | None = None, stream: IO[str] | None = None,
                 pipeline: Pipeline | None = None) -> tuple[Graph, PassReport]:
    """Optimize a copy of ``graph``; returns it with the report. See :class:`PassManager` for options."""
    pipeline = pipeline or pipeline_for_level(level)
    manager = PassManager(verify=verify, print_before=print_before, print_after=print_after,
                          disable=disable, stream=stream)
    out = graph.copy()
    report = manager.run(out, pipeline)
    return out, report


def optimize(graph: Graph, level: int = 2, **options) -> Graph:
    """An optimized copy of ``graph`` at ``level`` (0 = none ... 3); options as :func:`run_pipeline`."""
    return run_pipeline(graph, level, **options)[0]


__all__ = ["optimize", "run_pipeline", "pipeline_for_level", "PassManager", "Pipeline", "FixedPoint",
           "Pass", "PassError", "PassReport", "PASSES", "register_pass", "get_pass", "note", "working_on",
           "fusion_summary", "LEVELS"]
