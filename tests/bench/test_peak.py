"""The machine's peak: FMA kernels per vector width, memory bandwidth, caching, the CLI table."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.peak_kernels import ACCUMULATORS, UNROLL, flops_per_iteration, peak_kernels, vector_widths
from graphc.backends.llvm.target import host_target
from graphc.bench import peak as peak_module
from graphc.bench.peak import Peak, measure_peak


def test_widths_follow_the_cpu_features():
    info = host_target()
    features = {f[1:] for f in info.features.split(",") if f.startswith("+")}
    widths = vector_widths(info)
    assert widths[0] == 128
    assert (256 in widths) == ("avx" in features or info.vector_bits >= 256)
    assert (512 in widths) == ("avx512f" in features)
    assert peak_kernels().widths == widths


@pytest.mark.parametrize("iters", [1, 3])
def test_fma_kernel_does_the_work_it_counts(iters):
    """Each accumulator k starts at (k+1)/ACCUMULATORS and takes iters·UNROLL steps acc = acc·a + b; the
    result is lane 0 of their sum. Matching it proves the FLOP count (2 per lane per step)."""
    a, b = 0.5, 0.25
    want = 0.0
    for k in range(ACCUMULATORS):
        acc = (k + 1) / ACCUMULATORS
        for _ in range(iters * UNROLL):
            acc = acc * a + b
        want += acc
    kernels = peak_kernels()
    for width in kernels.widths:
        assert kernels.fma[width](iters, a, b) == pytest.approx(want, rel=1e-6)
        assert flops_per_iteration(width) == ACCUMULATORS * UNROLL * (width // 32) * 2


def test_stream_kernels_compute_copy_and_triad():
    kernels = peak_kernels()
    n = 37 * kernels.stream_lanes
    rng = np.random.default_rng(0)
    b, c = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    a = np.zeros(n, np.float32)
    kernels.triad(a.ctypes.data, b.ctypes.data, c.ctypes.data, 0.5, n)
    np.testing.assert_allclose(a, b + np.float32(0.5) * c, rtol=1e-6)
    kernels.copy(a.ctypes.data, c.ctypes.data, n)
    assert np.array_equal(a, c)


def test_measure_peak_reports_every_width_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peak_module, "_MEASURED", {})
    p = measure_peak(refresh=True, repeats=1, seconds=0.002, passes=1, working_set_mib=12)
    assert sorted(p.fma_gflops) == peak_kernels().widths
    assert all(v > 0 for v in p.fma_gflops.values())
    assert p.multi_gflops > 0 and p.copy_gbs > 0 and p.triad_gbs > 0 and p.triad_multi_gbs > 0
    assert p.threads == peak_module.usable_cores()
    assert p.gflops == p.fma_gflops[max(p.fma_gflops)]
    assert measure_peak() is p  # the process's measurement
    monkeypatch.setattr(peak_module, "_MEASURED", {})
    again = measure_peak()  # the machine's file in the cache directory
    assert again.to_dict() == p.to_dict()
    assert list((tmp_path / "peak").glob("*.json"))
    monkeypatch.setattr(peak_module, "_MEASURED", {})
    fresh = measure_peak(max_age_s=0.0, repeats=1, seconds=0.002, passes=1, working_set_mib=12)
    assert fresh.measured_at > p.measured_at  # older than max_age_s: measured again
    text = p.to_markdown()
    for width in p.fma_gflops:
        assert f"{width}-bit vectors, 1 core" in text
    assert "memory triad" in text


def test_peak_round_trips_and_scales_with_threads():
    p = Peak(cpu="x", features="avx2", fma_gflops={128: 10.0, 256: 20.0}, threads=4, multi_gflops=60.0,
             copy_gbs=5.0, triad_gbs=6.0, triad_multi_gbs=9.0, working_set_mib=100.0, last_level_cache_mib=32.0)
    assert Peak.from_dict(p.to_dict()) == p
    assert p.compute_peak(1) == 20.0
    assert p.compute_peak(2) == 30.0 and p.compute_peak(8) == 60.0
    assert p.bandwidth(1) == 6.0 and p.bandwidth(2) == 9.0


def test_bad_arguments_are_refused():
    for kwargs, word in (({"repeats": 0}, "repeats"), ({"repeats": 1.5}, "repeats"), ({"seconds": -1}, "seconds"),
                         ({"passes": 0}, "passes"),
                         ({"working_set_mib": 0}, "working_set_mib")):
        with pytest.raises(ValueError, match=word):
            measure_peak(refresh=True, **kwargs)


def test_cli_peak_prints_the_table(monkeypatch, capsys):
    from graphc.cli import main

    fake = Peak(cpu="testcpu", features="avx2", fma_gflops={128: 11.0, 256: 22.0}, threads=2, multi_gflops=40.0,
                copy_gbs=5.0, triad_gbs=6.0, triad_multi_gbs=9.0, working_set_mib=100.0, last_level_cache_mib=None)
    calls = []
    monkeypatch.setattr(peak_module, "measure_peak", lambda **kw: calls.append(kw) or fake)
    assert main(["bench", "--peak"]) == 0
    out = capsys.readouterr().out
    assert calls == [{"refresh": True}]
    assert "testcpu" in out and "| float32 FMA, 256-bit vectors, 1 core | 22.0 GFLOP/s |" in out
    assert "| float32 FMA, 256-bit vectors, 2 cores | 40.0 GFLOP/s |" in out
    assert main(["bench"]) == 1
    assert "needs a MODEL" in capsys.readouterr().err
