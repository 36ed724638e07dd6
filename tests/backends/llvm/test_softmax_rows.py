"""The softmax row kernel on special values: its maximum does not propagate NaN itself, so a NaN or
+inf anywhere in a row must still make the whole row NaN (through the sum), -inf entries give 0 (or
-inf for log_softmax), a row of one large value gives 1, and huge magnitudes do not overflow."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import load, run_native

ROWS = [
    [np.nan] + [0.5] * 20,
    [0.5] * 20 + [np.nan],
    [1.0] * 9 + [np.inf] + [2.0] * 11,
    [-np.inf] * 5 + [3.0] + [-np.inf] * 15,
    [-np.inf] * 21,
    [3e38, -3e38] + [0.0] * 19,
    [-1e30] * 21,
    list(np.linspace(-90.0, 0.0, 21)),
]


def _numpy(x: np.ndarray, log: bool) -> np.ndarray:
    with np.errstate(all="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        e = np.exp(x - m)
        s = np.sum(e, axis=-1, keepdims=True)
        return (x - m - np.log(s)) if log else e / s


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("rows", [True, False], ids=["rows", "strided"])
def test_special_values(op, rows, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    x = np.array(ROWS, dtype=np.float32)
    if not rows:  # the same rows along axis 1 of (1, 21, 8): the strided kernel
        x = x.T[None].copy()
    g = Graph(f"{op}_special")
    ob = OpBuilder(g)
    inp = g.add_input("x", TensorType("float32", ("batch", *x.shape[1:])))
    g.set_outputs([ob.emit(op, inp, axis=-1 if rows else 1)])
    got = run_native(load(g), {"x": x})[0]
    with np.errstate(over="ignore"):
        want = _numpy(x.astype(np.float64) if rows else x.astype(np.float64).transpose(0, 2, 1),
                      op == "log_softmax").astype(np.float32)
    if not rows:
        want = want.transpose(0, 2, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6 if op == "softmax" else 1e-4)
