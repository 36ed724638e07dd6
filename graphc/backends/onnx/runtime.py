"""Running an IR graph in onnxruntime: export once, then ``run(feeds)`` like the reference interpreter."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from graphc.backends.onnx.export import export_graph
from graphc.backends.reference.interpreter import bind_inputs
from graphc.ir.graph import Graph


def make_session(model: onnx.ModelProto, threads: int | None = None):
    """An onnxruntime CPU session for ``model`` (``threads``: intra-op threads, None = onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeGraph:
    """``graph`` exported to ONNX and loaded in onnxruntime; ``run`` checks inputs like the reference."""

    def __init__(self, graph: Graph, opset: int | None = None, threads: int | None = None):
        self.graph = graph
        self.model = export_graph(graph, opset)
        self.session = make_session(self.model, threads)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph outputs by name; inputs are checked and converted as the reference interpreter does."""
        arrays, _ = bind_inputs(self.graph, feeds)
        results = self.session.run(list(self.graph.outputs), arrays)
        return dict(zip(self.graph.outputs, results))
