"""Runnable speed comparisons of graphc against onnxruntime and PyTorch (``python -m benchmarks.run``)."""
