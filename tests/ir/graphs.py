"""Small hand-built IR graphs shared by the IR tests (no op registry involved)."""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, TensorType


def f32(*shape) -> TensorType:
    return TensorType("float32", shape)


def tiny() -> Graph:
    """Two inputs (one unused), three constants, a two-output op, attributes of every kind."""
    g = Graph("tiny")
    x = g.add_input("x", f32("batch", 3))
    g.add_input("ids", TensorType("int32", ("batch", "seq_len")))
    w = g.add_constant("dense/kernel", np.arange(6, dtype=np.float32).reshape(3, 2), trainable=True, layer="dense")
    b = g.add_constant("dense/bias", np.array([0.5, -1.0], np.float32), trainable=True, layer="dense")
    s = g.add_constant("scale", np.float32(2.0))
    m = g.add_op("matmul", [x, w], [f32("batch", 2)], layer="dense").outputs[0]
    y = g.add_op("bias_add", [m, b], [f32("batch", 2)], {"axis": -1}, layer="dense").outputs[0]
    r = g.add_op("reshape", [y], [f32("batch", 1, 2)],
                 {"shape": ("batch", 1, 2), "note": "a b", "eps": 1e-3, "flag": True, "pads": [[0, 1], [1, 0]]},
                 layer="reshape").outputs[0]
    halves = g.add_op("split", [y], [f32("batch", 1), f32("batch", 1)], {"axis": 1, "sizes": [1, 1]})
    e = g.add_op("mul", [halves.outputs[0], s], [f32("batch", 1)]).outputs[0]
    g.set_outputs([r, e])
    return g


TINY_TEXT = """\
graph tiny {
  input %x: f32[batch, 3]
  input %ids: i32[batch, seq_len]
  const %dense/kernel: f32[3, 2] trainable
  const %dense/bias: f32[2] trainable
  const %scale: f32[]
  %matmul: f32[batch, 2] = matmul(%x, %dense/kernel)  # dense
  %bias_add: f32[batch, 2] = bias_add(%matmul, %dense/bias) {axis=-1}  # dense
  %reshape: f32[batch, 1, 2] = reshape(%bias_add) {eps=0.001, flag=True, note='a b', pads=[[0, 1], [1, 0]], \
shape=[batch, 1, 2]}  # reshape
  %split:0: f32[batch, 1], %split:1: f32[batch, 1] = split(%bias_add) {axis=1, sizes=[1, 1]}
  %mul: f32[batch, 1] = mul(%split:0, %scale)
  return %reshape, %mul
}"""


def chain(n: int = 3) -> Graph:
    """x -> relu -> relu ... (n ops), all f32[batch, 4]."""
    g = Graph("chain")
    v = g.add_input("x", f32("batch", 4))
    for _ in range(n):
        v = g.add_op("relu", [v], [f32("batch", 4)], layer="act").outputs[0]
    g.set_outputs([v])
    return g
