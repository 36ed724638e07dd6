"""``cross_replica_sum`` against its definition, with three replicas simulated in one process.

Each replica is a thread with a replica context of its own whose ``all_reduce_sum`` meets the other
threads at a barrier and sums their arrays in rank order (:class:`LocalReplicas`), as an all-reduce
across processes would. The reference interpreter and native libraries (one instance per replica, the
collective hook attached) must give every replica the sum of the replicas' values; the gradient must make
the share-weighted sum of the replicas' gradients equal to the gradient of the global objective
``sum_r share_r * loss_r``, here checked against central differences of that objective.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graphc.autodiff import gradients
from graphc.backends.onnx import OnnxExportError, export_graph
from graphc.backends.reference import run
from graphc.distribute import replica
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import NativeError
from tests.backends.llvm.helpers import load


class LocalReplicas:
    """``n`` replicas in threads of one process: an in-place all-reduce through a barrier."""

    def __init__(self, n: int):
        self.n = n
        self.barrier = threading.Barrier(n, timeout=60)
        self.slots: list[np.ndarray | None] = [None] * n
        self.calls = [0] * n

    def all_reduce_sum(self, rank: int, array: np.ndarray) -> None:
        self.calls[rank] += 1
        self.slots[rank] = array.copy()
        self.barrier.wait()
        total = self.slots[0].astype(np.float64)
        for other in self.slots[1:]:
            total = total + other
        self.barrier.wait()  # everyone has read the slots before any is written again
        array[...] = total.astype(array.dtype)

    def run(self, fn, shares=None) -> list:
        """``fn(rank)`` on every replica, each in its own thread and replica context; their results."""
        shares = shares or [1.0 / self.n] * self.n
        results: list = [None] * self.n
        errors: list = []

        def body(rank: int) -> None:
            try:
                with replica.replica_context(lambda a: self.all_reduce_sum(rank, a), shares[rank]):
                    results[rank] = fn(rank)
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if errors:
            raise errors[0]
        return results


SHARES = [0.5, 0.3, 0.2]  # unequal: a global batch of 10 split 5, 3, 2


def _sum_graph(shape, weighted=False, dtype="float32") -> Graph:
    g = Graph("crs")
    x = g.add_input("x", TensorType(dtype, shape))
    g.set_outputs([OpBuilder(g, layer="stats").cross_replica_sum(x, weighted=weighted)])
    return g


def _values(rng, shape, n=3, dtype=np.float32):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(n)]


def test_without_a_context_the_op_is_the_identity(rng):
    g = _sum_graph(("batch", 7))
    x = rng.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_array_equal(run(g, {"x": x})[g.outputs[0]], x)


@pytest.mark.parametrize("shape", [(1, 7), (3, 17), (7, 1, 3)])
def test_reference_sums_over_three_replicas(shape, rng):
    g = _sum_graph(("batch",) + shape[1:])
    xs = _values(rng, shape)
    replicas = LocalReplicas(3)
    got = replicas.run(lambda r: run(g, {"x": xs[r]})[g.outputs[0]])
    want = xs[0].astype(np.float64) + xs[1] + xs[2]
    for r in range(3):
        np.testing.assert_allclose(got[r], want, rtol=1e-6, atol=1e-6, err_msg=f"replica {r}")
        np.testing.assert_array_equal(got[r], got[0])
    assert replicas.calls == [1, 1, 1]


def test_the_weighted_sum_is_in_each_replicas_units(rng):
    g = _sum_graph((3, 5), weighted=True, dtype="float64")
    xs = _values(rng, (3, 5), dtype=np.float64)
    got = LocalReplicas(3).run(lambda r: run(g, {"x": xs[r]})[g.outputs[0]], SHARES)
    weighted = sum(s * x for s, x in zip(SHARES, xs))
    for r in range(3):
        np.testing.assert_allclose(got[r], weighted / SHARES[r], rtol=1e-12, err_msg=f"replica {r}")


def _objective_graph(dtype="float64"):
    """loss_r = sum(c * tanh(crs(x_r) * x_r)): each replica's loss reads the cross-replica sum and its own x."""
    g = Graph("objective")
    b = OpBuilder(g, layer="objective")
    x = g.add_input("x", TensorType(dtype, (3, 5)))
    c = g.add_input("c", TensorType(dtype, (3, 5)))
    s = b.cross_replica_sum(x)
    loss = b.reduce_sum(b.mul(c, b.tanh(b.mul(s, x))), axes=(0, 1))
    grads = gradients(g, loss, [x])
    g.set_outputs([loss, grads[x]])
    return g


def test_the_gradient_is_the_global_objectives(rng):
    """Each replica's gradient, scaled by its share (as data parallelism does), is d(sum_q share_q loss_q)/dx_r."""
    g = _objective_graph()
    xs = _values(rng, (3, 5), dtype=np.float64)
    cs = _values(rng, (3, 5), dtype=np.float64)
    got = LocalReplicas(3).run(lambda r: run(g, {"x": xs[r], "c": cs[r]})[g.outputs[1]], SHARES)

    def objective(xs_):
        s = sum(xs_)
        return sum(w * np.sum(c * np.tanh(s * x)) for w, c, x in zip(SHARES, cs, xs_))

    h = 1e-6
    for r in range(3):
        v = rng.standard_normal((3, 5))
        plus = [x + h * v if q == r else x for q, x in enumerate(xs)]
        minus = [x - h * v if q == r else x for q, x in enumerate(xs)]
        numeric = (objective(plus) - objective(minus)) / (2 * h)
        np.testing.assert_allclose(SHARES[r] * np.sum(got[r] * v), numeric, rtol=1e-6, err_msg=f"replica {r}")


def test_the_weighted_sum_is_not_differentiated_again():
    g = Graph("second")
    x = g.add_input("x", TensorType("float64", (2,)))
    y = OpBuilder(g, layer="twice").cross_replica_sum(x, weighted=True)
    loss = OpBuilder(g).reduce_sum(y, axes=(0,))
    with pytest.raises(NotImplementedError, match=r"layer 'twice'.*second derivative"):
        gradients(g, loss, [x])


def test_an_integer_input_is_refused():
    g = Graph("ints")
    x = g.add_input("x", TensorType("int32", (2,)))
    with pytest.raises(ValueError, match="cross_replica_sum input"):
        OpBuilder(g).cross_replica_sum(x)


def test_onnx_export_is_refused_naming_the_layer():
    with pytest.raises(OnnxExportError, match=r"layer 'stats'.*'cross_replica_sum'.*cannot be exported to ONNX"):
        export_graph(_sum_graph(("batch", 3)))


# ---------------------------------------------------------------------------- native code
def _instances(lib, n=3):
    out = []
    for _ in range(n):
        inst = lib.instance(1)
        replica.attach(inst)
        out.append(inst)
    return out


@pytest.mark.parametrize("shape", [(1, 7), (3, 17), (7, 1, 3)])
def test_native_sums_over_three_replicas(shape, rng):
    g = _sum_graph(("batch",) + shape[1:])
    lib = load(g, "crs_sum")
    insts = _instances(lib)
    xs = _values(rng, shape)
    replicas = LocalReplicas(3)
    got = replicas.run(lambda r: insts[r].run([xs[r]])[0])
    want = xs[0].astype(np.float64) + xs[1] + xs[2]
    for r in range(3):
        np.testing.assert_allclose(got[r], want, rtol=1e-6, atol=1e-6, err_msg=f"replica {r}")
    assert replicas.calls == [1, 1, 1]
    # the input is not changed, and without a context (or a hook) a replica is alone
    np.testing.assert_array_equal(insts[0].run([xs[0]])[0], xs[0])
    np.testing.assert_array_equal(lib.instance(1).run([xs[1]])[0], xs[1])


def test_native_gradient_equals_the_reference(rng):
    g = _objective_graph("float32")
    lib = load(g, "crs_objective")
    insts = _instances(lib)
    xs = _values(rng, (3, 5))
    cs = _values(rng, (3, 5))
    got = LocalReplicas(3).run(lambda r: insts[r].run([xs[r], cs[r]]), SHARES)
    want = LocalReplicas(3).run(lambda r: [run(g, {"x": xs[r], "c": cs[r]})[v] for v in g.outputs], SHARES)
    for r in range(3):
        for name, a, b in zip(("loss", "gradient"), got[r], want[r]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"replica {r} {name}")


def test_a_failing_collective_fails_the_native_run_with_its_own_error(rng):
    lib = load(_sum_graph(("batch", 3)), "crs_failing")
    inst = lib.instance(1)
    replica.attach(inst)

    def lost_peer(array):
        raise ConnectionError("peer 1 closed the connection")

    with pytest.raises(ConnectionError, match="peer 1 closed") as info:
        with replica.replica_context(lost_peer):
            inst.run([np.ones((2, 3), np.float32)])
    assert isinstance(info.value.__cause__, NativeError)
    assert "cross-replica sum failed" in str(info.value.__cause__)
    assert "layer 'stats'" in str(info.value.__cause__)
    # the instance still works afterwards
    np.testing.assert_array_equal(inst.run([np.ones((2, 3), np.float32)])[0], np.ones((2, 3), np.float32))
