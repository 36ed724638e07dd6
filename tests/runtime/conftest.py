"""The small model the C-ABI tests run ("abi_model"), compiled once per test module (a cache hit after the
first: a module that starts after the entry was evicted builds it again)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm import compile_library
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library


def abi_graph(name: str = "abi_model") -> Graph:
    """ids int32 (batch, seq), x float32 (batch, 8) -> y = relu((mean_seq(table[ids]) + x) @ w + b), pooled."""
    rng = np.random.default_rng(5)
    g = Graph(name)
    ids = g.add_input("ids", TensorType("int32", ("batch", "seq")))
    x = g.add_input("x", TensorType("float32", ("batch", 8)))
    table = g.add_constant("table", rng.standard_normal((50, 8)).astype(np.float32))
    w = g.add_constant("w", rng.standard_normal((8, 4)).astype(np.float32))
    b = g.add_constant("b", rng.standard_normal(4).astype(np.float32))
    ob = OpBuilder(g, layer="abi")
    e = ob.gather(table, ids)
    pooled = ob.add(ob.reduce_mean(e, axes=(1,)), x)
    y = ob.relu(ob.bias_add(ob.matmul(pooled, w), b))
    g.rename_value(y, "y")
    g.rename_value(pooled, "pooled")
    g.set_outputs(["y", "pooled"])
    return g


@pytest.fixture(scope="module")
def abi_library():
    return compile_library(abi_graph())


@pytest.fixture(scope="module")
def abi(abi_library) -> Library:
    """The abi_model library loaded through the ctypes binding."""
    return Library(abi_library.shared, abi_library.symbol)


def abi_inputs(batch: int, seq: int, seed: int = 0) -> list[np.ndarray]:
    """Random (ids, x) for the abi_model."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 50, (batch, seq)).astype(np.int32), rng.standard_normal((batch, 8)).astype(np.float32)]
