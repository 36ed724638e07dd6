"""Every seed model (the architectures of ../shared/spec/programs, plus the stereo Xception)
exported to ONNX, checked, and run in onnxruntime against the reference interpreter.

Random weights; batch sizes 1 and 3; for models with a free sequence length, two lengths;
both the plain and the optimized export, at rtol 1e-4 / atol 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.onnx
from graphc import Input, Model, applications, layers
from tests.backends.onnx.checks import assert_verifies, check_model, randomize_weights
from tests.programs.seed_models import SEED_MODELS


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_model(name, rng):
    build, _, lengths = SEED_MODELS[name]
    model, data = build(graphc)
    randomize_weights(model, rng)
    for optimize in (False, True):
        check_model(graphc.onnx.export(model, optimize=optimize), graphc.onnx.to_graph(model, optimize))
        for batch, k in ((1, 0), (3, 1)):
            x = data(rng, batch) if lengths is None else data(rng, batch, lengths[k])
            assert_verifies(model, x, optimize=optimize, what=f"{name}: batch {batch}")


def test_stereo_xception(rng):
    """Program 07's dual-camera model: one Xception base (free image size) shared by two views."""
    base = applications.Xception(weights=None, include_top=False)
    left, right = Input(shape=(250, 250, 3)), Input(shape=(250, 250, 3))
    stereo = Model([left, right], layers.concatenate([base(left), base(right)], axis=-1))
    randomize_weights(stereo, rng)
    proto = graphc.onnx.export(stereo)
    check_model(proto, graphc.onnx.to_graph(stereo))
    assert [d.dim_value or d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim] == \
        ["batch", 8, 8, 4096]
    for batch, optimize in ((1, False), (2, True)):
        x = [rng.random((batch, 250, 250, 3), dtype=np.float32) for _ in range(2)]
        assert_verifies(stereo, x, optimize=optimize, what=f"stereo Xception, batch {batch}")


def test_xception_base_with_free_image_size(rng):
    """The base alone keeps its spatial dims free: 'same' padding of strided layers depends on them."""
    base = applications.Xception(weights=None, include_top=False)
    randomize_weights(base, rng)
    graph = graphc.onnx.to_graph(base)
    check_model(graphc.onnx.export(base), graph)
    assert all(isinstance(d, str) for d in graph.type_of(graph.inputs[0]).shape[:3])
    for batch, hw in ((1, (71, 75)), (3, (90, 81))):
        assert_verifies(base, rng.random((batch, *hw, 3), dtype=np.float32), what=f"Xception {hw}")
