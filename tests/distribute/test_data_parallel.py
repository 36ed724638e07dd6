"""Data-parallel fit on two processes on this machine (gloo over loopback TCP, the environment torchrun
sets): after two shuffled epochs on 2 ranks with batch b per rank, both ranks hold identical weights
equal to one process training with batch 2b on the same sample order, and log the global losses; a rank
that dies makes the other fail with a clear error within the collective's timeout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphc.distribute import DataParallel
from tests.distribute import dp_worker
from tests.distribute.dp_launch import gloo_ranks

WORKER = Path(dp_worker.__file__)


def _launch(mode: str, target: str, batch: int, tmp_path: Path, timeout: float = 60.0, dp_timeout: float = 60.0):
    """Start 2 ranks as torchrun would; returns (return codes, outputs, stderr texts, seconds)."""
    outs = [tmp_path / f"{mode}_{target}_rank{rank}.npz" for rank in range(2)]
    codes, errors, seconds = gloo_ranks(lambda rank: [str(WORKER), mode, str(outs[rank]), target, str(batch)],
                                        timeout, dp_timeout)
    return codes, outs, errors, seconds


def _single_process(target: str, batch: int):
    """One process, batch 2b, the order 2 ranks shuffle the samples in (rank 0 draws the seed they share)."""
    model = dp_worker.build(target)
    x, y = dp_worker.data()
    np.random.seed(dp_worker.SHUFFLE_SEED)
    np.random.seed(int(np.random.randint(2 ** 31 - 1)))
    history = model.fit(x, y, batch_size=2 * batch, epochs=2, shuffle=True, verbose=0)
    return model.get_weights(), history.history["loss"]


@pytest.mark.parametrize("target", ["reference", "native"])
def test_two_ranks_equal_one_process_on_the_global_batch(target, tmp_path):
    batch = 4
    codes, outs, errors, _ = _launch("train", target, batch, tmp_path)
    assert codes == [0, 0], errors
    ranks = [np.load(out) for out in outs]
    weights, losses = _single_process(target, batch)
    assert len(weights) == 4
    for i, want in enumerate(weights):
        np.testing.assert_array_equal(ranks[0][f"w{i}"], ranks[1][f"w{i}"], err_msg=f"weight {i}: ranks differ")
        np.testing.assert_allclose(ranks[0][f"w{i}"], want, rtol=1e-5, atol=1e-7, err_msg=f"weight {i}")
        assert not np.allclose(want, dp_worker.build("reference").get_weights()[i])  # it did train
    np.testing.assert_allclose(ranks[0]["loss"], losses, rtol=1e-5)
    np.testing.assert_array_equal(ranks[0]["loss"], ranks[1]["loss"])


def test_a_dead_rank_makes_the_other_fail_clearly(tmp_path):
    codes, outs, errors, seconds = _launch("die", "reference", 4, tmp_path, timeout=50.0, dp_timeout=10.0)
    assert codes[1] == 3, errors[1]
    assert codes[0] == 1, errors[0]
    error = str(np.load(outs[0])["error"])
    assert error.startswith("DistributedError: rank 0 of 2:"), error
    assert "a peer process died" in error
    assert seconds < 45


def test_refusals_name_what_is_missing():
    assert DataParallel(sync_batchnorm=True).sync_batchnorm  # see tests/distribute/test_sync_batchnorm.py
    with pytest.raises(ValueError, match="'nccl'"):
        DataParallel(backend="nccl")
    with pytest.raises(ValueError, match="timeout"):
        DataParallel(timeout=0)
