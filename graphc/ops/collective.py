"""Collective ops: values summed across the replicas of data-parallel training.

``cross_replica_sum(x; weighted)`` is ``x`` summed over every replica (process) running the same graph
at the same step, as each replica sees it. Which replicas those are is decided where the graph runs,
not in it: the replica context of :mod:`graphc.distribute.replica` (no context: one replica, the op is
the identity). Synchronized BatchNormalization reduces its per-replica sums and counts with it, so
every replica normalizes with the global batch's statistics.

``weighted=True`` is the op's own gradient: the replicas' values weighted by their shares of the global
loss, summed, and divided by this replica's share (see the replica module), which keeps the gradients
that data parallelism sums afterwards equal to the global batch's gradient when the shares differ.

Every replica must run the op on a value of the same shape in the same order (the graphs are the same);
the native code calls the instance's collective hook between kernels. ONNX has no collective, so the op
has no ONNX mapping: exporting a graph that holds one is refused, naming the layer. Its value depends on
the context it runs in, so a graph must not feed it constants (constant folding would evaluate it as a
single replica); synchronized BatchNormalization packs its counts with its sums, which never are.
"""

from __future__ import annotations

from graphc.ops.common import require_float
from graphc.ops.registry import OpDef, get, register


def _cross_replica_sum_infer(types, *, weighted):
    x = types[0]
    require_float(x, "cross_replica_sum input")
    return x


def _cross_replica_sum(x, *, weighted):
    from graphc.distribute.replica import cross_replica_sum

    return cross_replica_sum(x, weighted=bool(weighted))


register(OpDef("cross_replica_sum", _cross_replica_sum_infer, _cross_replica_sum, attrs={"weighted": False},
               num_inputs=1, fusion_kind="opaque",
               doc="x summed over the data-parallel replicas of the current replica context (the identity "
                   "without one); weighted: by each replica's share of the loss, in this replica's units."))


# ---------------------------------------------------------------------------- gradients
# The op is linear: y_r = sum_q x_q, so x_r's cotangent is the sum of every replica's cotangent of y,
# each replica's taken in the units of the global loss (weighted by its share) and brought back to
# this replica's. That weighted sum is not differentiated again.

def _cross_replica_sum_vjp(ctx, dy):
    if ctx.attrs["weighted"]:
        raise NotImplementedError(f"cross_replica_sum(weighted=True) (layer {ctx.op.layer!r}) is the gradient of a "
                                  "cross-replica sum: its own gradient (a second derivative) is not supported")
    return [ctx.emit("cross_replica_sum", dy, weighted=True)]


get("cross_replica_sum").vjp = _cross_replica_sum_vjp


# ---------------------------------------------------------------------------- native
# The result is a copy of x that the instance's collective hook sums across replicas in place, in one
# launch of one item between the op's neighbours (graphc/c_runtime: gc_instance_set_collective).

def _cross_replica_sum_lower(kb, op, x, *, out, weighted):
    kb.copy(out, x)
    kb.cross_replica_sum(out, weighted=bool(weighted))


get("cross_replica_sum").lower = _cross_replica_sum_lower
