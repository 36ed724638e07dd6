"""Max pooling on special values: windows inside the input take a tree of plain maxima with an unordered
comparison beside it, windows across the padding the checked path with the NaN-propagating maximum; both
must give what the reference gives: NaN wherever a NaN is in the window, +inf and -inf as values, and the
maximum of the window otherwise, for every tap position, every pooling shape and a tail of channels."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import load, run_native

# (kernel, stride, pads): valid 2x2 and 3x3 (every window inside), 3x3 'same' (border windows checked)
POOLS = [((2, 2), (2, 2), ((0, 0), (0, 0))), ((3, 3), (2, 2), ((0, 0), (0, 0))), ((3, 3), (2, 2), ((1, 1), (1, 1))),
         ((3, 3), (1, 1), ((1, 1), (1, 1)))]


def _special_input(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=flat.size // 6, replace=False)
    for i, v in zip(picks, [np.nan, np.inf, -np.inf, 3e38, -3e38] * len(picks)):
        flat[i] = v
    x[0, :, :, 5] = np.nan  # a whole channel of NaN: every window of it
    x[1, 2, 3, :] = -np.inf  # a pixel of -inf: its windows take their other taps
    return x


@pytest.mark.parametrize("kernel, strides, pads", POOLS, ids=["2x2-valid", "3x3s2-valid", "3x3s2-same", "3x3s1-same"])
def test_max_pool_special_values(kernel, strides, pads, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(7)
    x = _special_input(rng, (3, 9, 11, 37))  # 37 channels: two whole vectors and a tail on 16 lanes
    g = Graph("max_pool_special")
    inp = g.add_input("x", TensorType("float32", ("batch", 9, 11, 37)))
    g.set_outputs([OpBuilder(g).emit("max_pool", inp, kernel=kernel, strides=strides, pads=pads)])
    want = reference_run(g, {"x": x})[g.outputs[0]]
    for threads in (1, 2):
        got = run_native(load(g), {"x": x}, threads)[0]
        assert np.isnan(want).any() and np.isinf(want).any()
        np.testing.assert_array_equal(got, want)  # NaN where the reference has NaN, every value exact


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_max_pool_of_bytes_inside_the_input(dtype, tmp_path, monkeypatch):
    """Integers take the tree of compares (unsigned bytes compared unsigned)."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    info = np.iinfo(dtype)
    x = np.random.default_rng(8).integers(info.min, info.max + 1, (2, 9, 9, 19)).astype(dtype)
    g = Graph(f"max_pool_{dtype}")
    inp = g.add_input("x", TensorType(dtype, ("batch", 9, 9, 19)))
    g.set_outputs([OpBuilder(g).emit("max_pool", inp, kernel=(3, 3), strides=(2, 2))])
    want = reference_run(g, {"x": x})[g.outputs[0]]
    np.testing.assert_array_equal(run_native(load(g), {"x": x})[0], want)
