"""graphc: a deep-learning model compiler with a Keras-style functional front end.

Models written with ``Input``, ``layers`` and ``Model``/``Sequential`` are lowered to a
typed IR (``graphc.lower``), optimized, and run by a backend (``graphc.build``).
"""

from graphc import (
    activations,
    applications,
    callbacks,
    config,
    constraints,
    layers,
    losses,
    metrics,
    models,
    onnx,
    optimizers,
    regularizers,
    utils,
)
from graphc import ops as _ops  # noqa: F401  (registers every op)
from graphc.api import CompiledModel, build, lower, optimize, plan_memory, verify
from graphc.frontend.input_layer import Input, InputLayer
from graphc.frontend.model import Model
from graphc.frontend.sequential import Sequential
from graphc.quantization import quantize, quantize_report
from graphc.saving import from_keras

__version__ = "0.1.0"

__all__ = ["Input", "InputLayer", "Model", "Sequential", "layers", "models", "utils", "config", "callbacks", "losses",
           "metrics", "optimizers", "regularizers", "constraints", "activations", "applications", "onnx",
           "lower", "build", "verify", "optimize", "plan_memory", "CompiledModel", "from_keras", "quantize",
           "quantize_report", "__version__"]
