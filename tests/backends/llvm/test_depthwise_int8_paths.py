"""Depthwise int8 (``qlinear_conv`` with one group per channel) bit for bit against the numpy integer
reference on odd shapes: the stream kernel along flattened output rows (stride 1: one stream per row
group; larger strides: one per kernel column) on every dot product the target may pick, and the
channel-by-channel kernel it falls back to when its tables do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.kernels import depthwise_int8
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import load, run_native
from tests.quantize.test_native_int8 import EPILOGUES, PATHS, _input, build_for, depthwise_graph  # noqa: F401 (build_for: a fixture)

CHANNELS = [1, 3, 7, 17, 33]
# (x dtype, y dtype, per-channel weights, activation, max_value): linear, relu and relu6 on both input types
ALL_EPILOGUES = [*EPILOGUES, ("uint8", "uint8", False, "linear", None), ("int8", "int8", True, "relu", 6.0)]


def _geometry(spatial: int, kernel: int, stride: int, padding: str) -> dict | None:
    """A 2-D convolution dict (Keras's "same" / "valid" padding), None where "valid" leaves no output."""
    if padding == "valid":
        out = (spatial - kernel) // stride + 1
        if out < 1:
            return None
        pads = (0, 0)
    else:
        out = -(-spatial // stride)
        total = max((out - 1) * stride + kernel - spatial, 0)
        pads = (total // 2, total - total // 2)
    return {"spatial": (spatial, spatial), "kernel": (kernel, kernel), "strides": (stride, stride),
            "pads": (pads, pads), "out": (out, out)}


GEOMETRIES = [c for c in (_geometry(s, k, st, p) for s in (1, 5, 9) for k in (3, 5) for st in (1, 2)
                          for p in ("same", "valid")) if c is not None]


def _check(lib, g, rng, x_dtype: str, spatial, C: int, what: str) -> None:
    for batch in (1, 3):
        x = _input(rng, x_dtype, (batch, *spatial, C))
        want = run(g, {"x": x})[g.outputs[0]]
        for threads in (1, 2):
            np.testing.assert_array_equal(run_native(lib, {"x": x}, threads)[0], want,
                                          err_msg=f"{what} batch {batch} threads {threads}")


@pytest.mark.parametrize("C", CHANNELS)
def test_depthwise_on_the_host_equals_the_reference(rng, C):
    """Every geometry (spatial 1, 5, 9; 3x3 and 5x5; strides 1 and 2; same and valid), the epilogues in turn."""
    for n, conv in enumerate(GEOMETRIES):
        epilogue = ALL_EPILOGUES[(n + C) % len(ALL_EPILOGUES)]
        g = depthwise_graph(rng, C, conv, epilogue)
        _check(load(g), g, rng, epilogue[0], conv["spatial"], C, f"C {C} {conv} {epilogue}")


@pytest.mark.parametrize(("cpu", "path"), PATHS[1:])
@pytest.mark.parametrize("C", [3, 17])
def test_depthwise_on_every_dot_product_equals_the_reference(rng, build_for, cpu, path, C):  # noqa: F811
    """vpdpbusd on 256 bits, vpmaddwd (two kernel rows per lane instead of four) and the generic products."""
    for n, conv in enumerate([GEOMETRIES[i] for i in (0, 3, 9, len(GEOMETRIES) - 1)]):
        epilogue = ALL_EPILOGUES[n % len(ALL_EPILOGUES)]
        g = depthwise_graph(rng, C, conv, epilogue)
        _check(build_for(g, cpu, path), g, rng, epilogue[0], conv["spatial"], C, f"{path} C {C} {conv} {epilogue}")


@pytest.mark.parametrize("C", [3, 16, 32, 64])
def test_wide_rows_equal_the_reference(rng, C):
    """Rows of many vectors: whole spans of the tables' period, the vectors left after them, and (AVX-512)
    four vectors narrowed by packs into one store, for uint8 and int8 outputs."""
    convs = [{"spatial": (7, 23), "kernel": (3, 3), "strides": (1, 1), "pads": ((1, 1), (1, 1)), "out": (7, 23)},
             {"spatial": (6, 37), "kernel": (3, 3), "strides": (2, 2), "pads": ((0, 1), (0, 1)), "out": (3, 19)},
             {"spatial": (5, 19), "kernel": (5, 5), "strides": (1, 1), "pads": ((0, 0), (0, 0)), "out": (1, 15)}]
    for n, conv in enumerate(convs):
        for epilogue in ALL_EPILOGUES[n % 2::2]:
            g = depthwise_graph(rng, C, conv, epilogue)
            _check(load(g), g, rng, epilogue[0], conv["spatial"], C, f"C {C} {conv} {epilogue}")


def test_one_dimensional_and_dilated_depthwise_equals_the_reference(rng):
    convs = [{"spatial": (11,), "kernel": (5,), "strides": (1,), "pads": ((2, 2),), "out": (11,)},
             {"spatial": (11,), "kernel": (3,), "strides": (2,), "pads": ((1, 0),), "out": (5,)},
             {"spatial": (9, 8), "kernel": (3, 3), "strides": (1, 1), "pads": ((2, 2), (2, 2)), "dilations": (2, 2),
              "out": (9, 8)},
             {"spatial": (9, 8), "kernel": (3, 2), "strides": (2, 1), "pads": ((0, 1), (1, 1)), "dilations": (1, 3),
              "out": (4, 6)}]
    for n, conv in enumerate(convs):
        for C in (3, 17):
            epilogue = ALL_EPILOGUES[(n + C) % len(ALL_EPILOGUES)]
            g = depthwise_graph(rng, C, conv, epilogue)
            _check(load(g), g, rng, epilogue[0], conv["spatial"], C, f"C {C} {conv} {epilogue}")


def test_tables_too_large_fall_back_to_the_channel_kernel(rng, monkeypatch, tmp_path):
    monkeypatch.setattr(depthwise_int8, "TABLE_BYTES", 0)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))  # the code cache would hold the stream kernel's build
    for C, conv in ((3, GEOMETRIES[0]), (17, GEOMETRIES[-1]), (33, GEOMETRIES[3])):
        epilogue = ALL_EPILOGUES[C % len(ALL_EPILOGUES)]
        g = depthwise_graph(rng, C, conv, epilogue)
        _check(load(g), g, rng, epilogue[0], conv["spatial"], C, f"fallback C {C} {conv} {epilogue}")


def test_a_depth_multiplier_of_two_is_refused_natively(rng):
    g = Graph("multiplier")
    x = g.add_input("x", TensorType("uint8", ("batch", 5, 5, 3)))
    c = [g.add_constant(n, np.asarray(v)) for n, v in [
        ("xs", np.float32(0.05)), ("xz", np.uint8(3)), ("w", np.ones((3, 3, 1, 6), np.int8)), ("ws", np.float32(0.01)),
        ("wz", np.int8(0)), ("b", np.zeros(6, np.int32)), ("ys", np.float32(0.1)), ("yz", np.uint8(0))]]
    g.set_outputs([OpBuilder(g).emit("qlinear_conv", x, *c, strides=(1, 1), pads=((1, 1), (1, 1)), groups=3)])
    with pytest.raises(Exception, match="depthwise"):
        load(g)
