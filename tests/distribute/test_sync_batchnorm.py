"""``DataParallel(sync_batchnorm=True)`` against its definition: synchronized BatchNormalization over the
global batch IS BatchNormalization of one process on the concatenated batch.

- In one process, three replicas in threads (tests/ops/test_collective.py's LocalReplicas) of odd sizes
  1, 3 and 7 lower a marked BatchNormalization in training mode: each replica's output rows and every
  replica's new moving statistics equal those of the unmarked layer on the 11 samples together (with and
  without a mask).
- Two ranks on loopback gloo (this file run as a script, one process per rank, the environment torchrun
  sets) or under mpirun (Open MPI, when installed) fit a conv model with BatchNormalization for two
  shuffled epochs whose last global batch splits 3 + 2 (unequal shares): weights and moving statistics
  equal one process fitting on the global batches (rtol 1e-5), for the reference and the native step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.backends.reference import run
from graphc.distribute import DataParallel, sync_batchnorm
from graphc.frontend.to_ir import lower_model
from tests.distribute.dp_launch import gloo_ranks, mpi_missing, mpirun
from tests.ops.test_collective import LocalReplicas

SHUFFLE_SEED = 4321
SAMPLES = 45  # global batches of 8: five full ones, then 5 samples split 3 + 2 between the ranks
BATCH = 4  # per rank
EPOCHS = 2


# ---------------------------------------------------------------------------- one process, three replicas
def _bn_model(shape, sync: bool, mask: bool = False):
    graphc.utils.set_random_seed(3)
    x = graphc.Input(shape=shape)
    h = graphc.layers.Masking(mask_value=0.0)(x) if mask else x
    model = graphc.Model(x, graphc.layers.BatchNormalization(momentum=0.7, name="bn")(h))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(5)
    for var in bn.weights:
        var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
    bn.sync_replicas = sync
    return model


def _training_graph(model):
    """The model in training mode; outputs: its output, then the new moving mean and variance."""
    graph, _ = lower_model(model, training=True)
    graph.set_outputs([graph.outputs[0]] + list(graph.meta["state_updates"].values()))
    return graph


def _train_run(graph, x):
    result = run(graph, {graph.inputs[0]: x})
    return [result[v] for v in graph.outputs]


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_synced_statistics_of_three_replicas_are_the_concatenated_batchs(masked, rng):
    shape = (5, 3) if masked else (4, 5, 3)
    sizes = [1, 3, 7]
    xs = [rng.standard_normal((n,) + shape).astype(np.float32) for n in sizes]
    if masked:
        for x in xs:  # masked steps (all features zero), never a whole sample
            x[:, 1::3] = 0.0
    synced = _training_graph(_bn_model(shape, True, masked))
    plain = _training_graph(_bn_model(shape, False, masked))
    assert synced.op_counts()["cross_replica_sum"] == (2 if masked else 1)
    assert "cross_replica_sum" not in plain.op_counts()
    got = LocalReplicas(3).run(lambda r: _train_run(synced, xs[r]), [n / sum(sizes) for n in sizes])
    want = _train_run(plain, np.concatenate(xs))
    start = 0
    for r, n in enumerate(sizes):
        np.testing.assert_allclose(got[r][0], want[0][start:start + n], rtol=1e-5, atol=1e-5, err_msg=f"replica {r}")
        for k in (1, 2):  # moving mean and variance
            np.testing.assert_allclose(got[r][k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"replica {r} state {k}")
        start += n
    # alone (no replica context) a marked layer is the plain one
    for a, b in zip(_train_run(synced, xs[2]), _train_run(plain, xs[2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_only_sync_batchnorm_marks_the_layers_and_drops_stale_steps():
    model = _conv_bn_model("reference")
    x, y = _data()
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # a training step built per replica
    trainer = model._graphc_trainer
    assert any(s.training for s in trainer._steps.values())
    assert DataParallel().sync_batchnorm is False and not model.get_layer("bn").sync_replicas
    assert "sync_batchnorm=True" in repr(DataParallel(sync_batchnorm=True))
    marked = sync_batchnorm.prepare_fit(model)
    assert marked == [model.get_layer("bn")] and model.get_layer("bn").sync_replicas
    assert not any(s.training for s in trainer._steps.values())
    assert sync_batchnorm.batch_normalizations(model) == [model.get_layer("bn")]
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # a step built with the mark
    sync_batchnorm.finish_fit(model, marked)
    assert not model.get_layer("bn").sync_replicas
    assert not any(s.training for s in trainer._steps.values())


# ---------------------------------------------------------------------------- two ranks
def _conv_bn_model(target: str):
    graphc.utils.set_random_seed(0)
    layers = graphc.layers
    x = graphc.Input(shape=(6, 6, 2))
    h = layers.Conv2D(3, 3, name="conv")(x)
    h = layers.BatchNormalization(momentum=0.5, name="bn")(h)
    h = layers.Flatten()(layers.Activation("relu")(h))
    model = graphc.Model(x, layers.Dense(2, name="head")(h))
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse", metrics=["mae"])
    if target == "native":
        graphc.build(model, target="native", training=True, threads=1)
    return model


def _data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((SAMPLES, 6, 6, 2)).astype(np.float32)
    flat = x.reshape(SAMPLES, -1)
    return x, np.stack([np.sin(flat.sum(axis=1)), flat[:, 0] * flat[:, 1]], axis=1).astype(np.float32)


def _rank_main(out: str, target: str, engine: str) -> int:
    """One rank (gloo: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment; mpi: under mpirun):
    fit with synced statistics and save to ``out`` (``{rank}`` replaced)."""
    distribution = DataParallel(engine, timeout=60.0, sync_batchnorm=True)
    out = out.format(rank=distribution.rank)
    model = _conv_bn_model(target)
    x, y = _data()
    np.random.seed(SHUFFLE_SEED)
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0, distribution=distribution)
    np.savez(out, loss=np.asarray(history.history["loss"]), still_synced=model.get_layer("bn").sync_replicas,
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    return 0


def _launch(engine: str, target: str, tmp_path: Path, timeout: float = 600.0):
    outs = [tmp_path / f"sync_{engine}_{target}_rank{rank}.npz" for rank in range(2)]
    if engine == "mpi":
        code, output, _ = mpirun([__file__, str(outs[0]).replace("rank0", "rank{rank}"), target, "mpi"], timeout)
        return [code, code], outs, [output]
    codes, errors, _ = gloo_ranks(lambda rank: [__file__, str(outs[rank]), target, "gloo"], timeout)
    return codes, outs, errors


def _single_process(target: str):
    """One process on the global batches (2 * BATCH), in the order the ranks shuffle them."""
    model = _conv_bn_model(target)
    x, y = _data()
    np.random.seed(SHUFFLE_SEED)
    np.random.seed(int(np.random.randint(2 ** 31 - 1)))
    history = model.fit(x, y, batch_size=2 * BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
    return model, history.history["loss"]


@pytest.mark.parametrize("engine", ["gloo", "mpi"])
@pytest.mark.parametrize("target", ["reference", "native"])
def test_two_synced_ranks_equal_one_process_on_the_global_batch(target, engine, tmp_path):
    if engine == "mpi" and mpi_missing():
        pytest.skip(mpi_missing())
    codes, outs, errors = _launch(engine, target, tmp_path)
    assert codes == [0, 0], errors
    ranks = [np.load(out) for out in outs]
    model, losses = _single_process(target)
    names = [w.path for w in model.weights]
    untrained = _conv_bn_model("reference").get_weights()
    for i, want in enumerate(model.get_weights()):
        np.testing.assert_array_equal(ranks[0][f"w{i}"], ranks[1][f"w{i}"], err_msg=f"{names[i]}: ranks differ")
        np.testing.assert_allclose(ranks[0][f"w{i}"], want, rtol=1e-5, atol=1e-6, err_msg=names[i])
        if names[i] == "conv/bias":
            # BatchNormalization subtracts the batch mean of what the bias shifts: its gradient is zero
            # but for rounding, so it moves by rounding noise only (a few 1e-9 here)
            assert np.abs(want - untrained[i]).max() < 1e-6, names[i]
            continue
        assert not np.allclose(want, untrained[i]), names[i]  # it did train (moving statistics included)
    assert any("moving_variance" in n for n in names)
    np.testing.assert_allclose(ranks[0]["loss"], losses, rtol=1e-5)
    assert not any(bool(r["still_synced"]) for r in ranks), "fit left BatchNormalization synchronizing"


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1], sys.argv[2], sys.argv[3]))
