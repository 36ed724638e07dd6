"""Backends: the NumPy reference interpreter, ONNX export and native code."""
