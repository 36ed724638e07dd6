"""The ONNX backend: export an IR graph to ONNX and check it against onnxruntime.

``export_graph`` translates each op through its ``to_onnx`` facet (declared beside the op
in ``graphc/ops``, written against the :class:`EmitContext` facade); ``OnnxRuntimeGraph``
runs the export in onnxruntime; ``verify_graph`` compares onnxruntime with the reference
interpreter, per output and per layer. The public entry points taking Models are in
:mod:`graphc.onnx`.
"""

from graphc.backends.onnx.context import EmitContext, GraphEmitter, OnnxExportError
from graphc.backends.onnx.export import export_graph, save, value_info
from graphc.backends.onnx.opset import MIN_OPSET, default_opset, ort_max_opset
from graphc.backends.onnx.runtime import OnnxRuntimeGraph, make_session
from graphc.backends.onnx.verify import Comparison, VerifyReport, compare, run_onnxruntime, verify_graph

__all__ = ["EmitContext", "GraphEmitter", "OnnxExportError", "export_graph", "save", "value_info",
           "MIN_OPSET", "default_opset", "ort_max_opset", "Comparison", "VerifyReport", "compare",
           "run_onnxruntime", "verify_graph", "OnnxRuntimeGraph", "make_session"]
