"""OpenVINO as a comparison engine: graphc's ONNX export compiled by OpenVINO's CPU plugin.

Two settings, as users meet them: ``"f32"`` (``INFERENCE_PRECISION_HINT=f32``: float32
throughout, the like-for-like comparison) and ``None`` (OpenVINO's default, which on CPUs with
AMX or AVX512-BF16 runs convolutions and matmuls in bf16). Shapes are fixed to the inputs'
before compiling (``reshape``), as a deployment would, and one stream with ``threads`` inference
threads in the latency mode is used, so that every engine gets the same cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_runner(proto, input_names: Sequence[str], arrays: Sequence[np.ndarray], threads: int,
                    precision: str | None) -> Callable[[], list[np.ndarray]]:
    """A callable running the ONNX model ``proto`` on ``arrays`` (given in ``input_names`` order)
    through one OpenVINO infer request; returns the outputs (copies) in the model's order. Its
    ``precision`` attribute is the inference precision OpenVINO settled on."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    by_name = dict(zip(input_names, arrays))
    names = [inp.get_any_name() for inp in model.inputs]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"OpenVINO's model has inputs {missing} that graphc's export does not name")
    model.reshape({n: list(by_name[n].shape) for n in names})
    config = {"INFERENCE_NUM_THREADS": str(int(threads)), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    feeds = {n: by_name[n] for n in names}
    outputs = range(len(compiled.outputs))

    def run() -> list[np.ndarray]:
        request.infer(feeds)
        return [np.array(request.get_output_tensor(k).data) for k in outputs]

    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    run.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # what it runs at: f32, bf16
    return run

