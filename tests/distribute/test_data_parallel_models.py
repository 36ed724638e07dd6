"""Data-parallel fit of a conv model with BatchNormalization, an LSTM model and an embedding model on 2 ranks
(native steps, gloo and MPI) against one process on the concatenated batches, after two shuffled epochs
(rtol 1e-5).

The LSTM's samples are independent, so one process training with batch 2b is the reference. BatchNorm's
per-replica statistics are checked against their definitions: the reference is a twin model that calls
the same layers on each half of the global batch (each half normalized by its own statistics, exactly as
a rank normalizes its share) with loss weights 1/2, so its loss is the global batch's and its gradient
the mean of the halves'; the moving statistics every rank ends with are recomputed in NumPy from the
convolution's output on each half, step by step: ``moving = momentum * moving + (1 - momentum) *
mean over halves of the half's batch statistic`` (the mean of the replicas' own moving averages)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.distribute import dp_launch, dp_worker

ENGINES = ["gloo", pytest.param("mpi", marks=pytest.mark.skipif(dp_launch.mpi_missing() is not None,
                                                                 reason=str(dp_launch.mpi_missing())))]
BATCH = 4  # per rank


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'valid' 2-D convolution, stride 1, channels last (Conv2D's definition)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(1, 2))  # (n, h, w, c, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", windows.astype(np.float64), kernel.astype(np.float64)) + bias


def _conv_bn_twin(batch: int):
    """The conv model's per-replica reference: (trained weights, per-epoch losses, the moving mean and
    variance by their definition)."""
    import graphc

    start = dp_worker.build("native", "conv_bn").get_weights()
    x0, x1 = (graphc.Input(shape=dp_worker.INPUT_SHAPES["conv_bn"]) for _ in range(2))
    shared = dp_worker.conv_bn_layers(graphc)
    twin = graphc.Model([x0, x1], [dp_worker.apply_layers(shared, x0), dp_worker.apply_layers(shared, x1)])
    twin.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss=["mse", "mse"], loss_weights=[0.5, 0.5])
    twin.set_weights(start)
    graphc.build(twin, target="native", training=True, threads=1)
    x, y = dp_worker.data("conv_bn")
    momentum = dp_worker.BN_MOMENTUM
    mean, var = start[4].astype(np.float64), start[5].astype(np.float64)
    np.random.seed(dp_launch.shuffle_seed())
    losses = []
    for _ in range(dp_worker.EPOCHS):
        order = np.random.permutation(len(x))
        epoch = []
        for step in range(math.ceil(len(x) / (2 * batch))):
            halves = np.array_split(order[step * 2 * batch:(step + 1) * 2 * batch], 2)
            assert len(halves[0]) == len(halves[1]) == batch
            weights = twin.get_weights()
            features = [_conv(x[half], weights[0], weights[1]) for half in halves]
            mean = momentum * mean + (1 - momentum) * np.mean([f.mean(axis=(0, 1, 2)) for f in features], axis=0)
            var = momentum * var + (1 - momentum) * np.mean([f.var(axis=(0, 1, 2)) for f in features], axis=0)
            logs = twin.train_on_batch([x[halves[0]], x[halves[1]]], [y[halves[0]], y[halves[1]]], return_dict=True)
            epoch.append(logs["loss"])
        losses.append(np.mean(epoch))
    return twin.get_weights(), losses, mean, var


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_conv_batchnorm_per_replica_statistics(engine, tmp_path):
    run = dp_launch.launch(engine, "train", "native", BATCH, tmp_path, model="conv_bn")
    assert set(run.codes) == {0}, run.stderr
    weights, losses, moving_mean, moving_var = _conv_bn_twin(BATCH)
    ranks = [run.saved(rank) for rank in range(2)]
    assert len(weights) == 8  # conv kernel, bias; gamma, beta, moving mean, moving variance; head kernel, bias
    initial = dp_worker.build("reference", "conv_bn").get_weights()
    for i in range(8):
        np.testing.assert_array_equal(ranks[0][f"w{i}"], ranks[1][f"w{i}"], err_msg=f"weight {i}: ranks differ")
        if i != 1:  # the conv bias's gradient is zero up to rounding: BatchNorm subtracts the batch mean
            assert not np.allclose(ranks[0][f"w{i}"], initial[i]), f"weight {i} did not change"
    for i in (0, 1, 2, 3, 6, 7):
        np.testing.assert_allclose(ranks[0][f"w{i}"], weights[i], rtol=1e-5, atol=1e-7, err_msg=f"weight {i}")
    np.testing.assert_allclose(ranks[0]["w4"], moving_mean, rtol=1e-5, atol=1e-6, err_msg="moving mean")
    np.testing.assert_allclose(ranks[0]["w5"], moving_var, rtol=1e-5, err_msg="moving variance")
    np.testing.assert_allclose(ranks[0]["loss"], losses, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_lstm_equals_one_process_on_the_global_batch(engine, tmp_path):
    run = dp_launch.launch(engine, "train", "native", BATCH, tmp_path, model="lstm")
    assert set(run.codes) == {0}, run.stderr
    weights, losses = dp_launch.single_process("native", BATCH, "lstm")
    dp_launch.assert_ranks_equal_single(run, weights, losses, dp_worker.build("reference", "lstm").get_weights())


@pytest.mark.parametrize("engine", ENGINES)
def test_embedding_equals_one_process_on_the_global_batch(engine, tmp_path):
    """The embedding's gradient goes by rows (graphc.distribute.row_sparse): the same weights as one process."""
    run = dp_launch.launch(engine, "train", "native", BATCH, tmp_path, model="embedding")
    assert set(run.codes) == {0}, run.stderr
    weights, losses = dp_launch.single_process("native", BATCH, "embedding")
    dp_launch.assert_ranks_equal_single(run, weights, losses,
                                        dp_worker.build("reference", "embedding").get_weights())
