"""DataParallel(backend="mpi"): 2 ranks started by Open MPI's mpirun on this machine.

After two shuffled epochs with batch b per rank, both ranks hold identical weights equal to one process
training with batch 2b on the same sample order; the public collectives (in-place sums in several
buckets, broadcasts of any dtype) give the same answers on MPI and gloo. A rank killed mid-epoch makes
mpirun end the job: the survivor fails with a DistributedError, mpirun names the lost rank, and the job
ends within seconds, non-zero. A rank that stops answering fails the other after the timeout, which then
aborts the job (MPI collectives have no timeout of their own: graphc polls them against one)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from graphc.distribute import DataParallel
from tests.distribute import dp_launch, dp_worker

needs_mpi = pytest.mark.skipif(dp_launch.mpi_missing() is not None, reason=str(dp_launch.mpi_missing()))


@needs_mpi
def test_two_mpi_ranks_equal_one_process_on_the_global_batch(tmp_path):
    run = dp_launch.launch("mpi", "train", "native", 4, tmp_path)
    assert run.codes == [0], run.stderr
    weights, losses = dp_launch.single_process("native", 4)
    dp_launch.assert_ranks_equal_single(run, weights, losses, dp_worker.build("reference").get_weights())


@pytest.mark.parametrize("engine", ["gloo", pytest.param("mpi", marks=needs_mpi)])
def test_collectives_sum_in_place_and_broadcast_in_buckets(engine, tmp_path):
    run = dp_launch.launch(engine, "collectives", "reference", 1, tmp_path)
    assert run.codes in ([0], [0, 0]), run.stderr
    given = [dp_worker.rank_arrays(rank) for rank in range(2)]
    for rank in range(2):
        got = run.saved(rank)
        assert int(got["rank"]) == rank and int(got["world"]) == 2
        for name in ("f32", "f64", "i64"):
            want = given[0][name] + given[1][name]
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
            np.testing.assert_array_equal(got[name], want, err_msg=name)
        for name in ("grid", "mask", "scalar"):
            assert got[name].dtype == given[0][name].dtype and got[name].shape == given[0][name].shape, name
            np.testing.assert_array_equal(got[name], given[0][name], err_msg=name)


@needs_mpi
def test_a_killed_rank_ends_the_mpi_job_with_a_clear_error(tmp_path):
    run = dp_launch.launch("mpi", "kill", "reference", 4, tmp_path, timeout=50.0, dp_timeout=40.0)
    assert run.codes != [0], run.stderr
    assert run.seconds < 30, run.stderr  # far below the collective's timeout: mpirun ended the job
    assert "rank 1" in run.stderr and "signal 9" in run.stderr, run.stderr  # mpirun names the lost rank
    error = str(run.saved(0)["error"])
    assert error.startswith("DistributedError: rank 0 of 2: "), error
    assert "mpirun is ending the job (SIGTERM)" in error and "another rank exits abnormally" in error, error


@needs_mpi
def test_a_silent_rank_fails_the_mpi_job_after_the_timeout(tmp_path):
    run = dp_launch.launch("mpi", "hang", "reference", 4, tmp_path, timeout=50.0, dp_timeout=5.0)
    assert run.codes != [0], run.stderr
    assert run.seconds < 40, run.stderr
    error = str(run.saved(0)["error"])
    assert error == ("DistributedError: rank 0 of 2: the all-reduce of the gradients failed - a peer process did "
                     "not answer within 5 s"), error
    assert f"graphc: {error.removeprefix('DistributedError: ')}; aborting the MPI job" in run.stderr, run.stderr


def test_mpi_refusals_name_what_is_wrong(monkeypatch):
    with pytest.raises(ValueError, match="rank, world_size apply to backend='gloo' only"):
        DataParallel("mpi", rank=0, world_size=2)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"needs mpi4py .*graphc\[distributed\]"):
        DataParallel(backend="mpi")


@needs_mpi
@pytest.mark.slow
def test_the_example_trains_under_mpirun_and_resumes_from_rank_0s_checkpoint(tmp_path):
    script = str(dp_launch.ROOT / "examples" / "data_parallel" / "train.py")
    common = ["--backend", "mpi", "--samples", "128", "--batch-size", "16", "--target", "reference",
              "--checkpoint", str(tmp_path / "dp.weights.h5")]
    code, output, _ = dp_launch.mpirun([script, "--epochs", "1", *common], cwd=tmp_path)
    assert code == 0, output
    assert output.count("4/4 - ") == 1, output  # one epoch of 128 / (2 x 16) steps, shown by rank 0 only
    assert "2 rank(s) on mpi:" in output and (tmp_path / "dp.weights.h5").is_file(), output
    code, output, _ = dp_launch.mpirun([script, "--epochs", "2", "--resume", "1", *common], cwd=tmp_path)
    assert code == 0, output
    assert output.count("4/4 - ") == 1 and output.count("Epoch 2/2") == 1 and "Epoch 1/2" not in output, output
