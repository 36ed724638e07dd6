"""Calibration: the range of each activation, from the float graph run over the user's batches.

One :class:`RangeCollector` per tensor sees every batch. ``minmax`` keeps the extremes;
``percentile`` and ``entropy`` keep a histogram over a range symmetric around zero that widens
by whole bins when a later batch exceeds it (earlier counts keep their bins), so one pass over
the data is enough:

- ``percentile`` cuts (100 - p) / 2 percent of the mass off each tail (p = 99.999 by default,
  as onnxruntime's PercentileCalibrater).
- ``entropy`` chooses the clipping threshold whose 255-level quantization of the histogram
  loses the least information: for each candidate half-width, the reference distribution P is
  the histogram inside it with the outliers folded into its edge bins, Q is that histogram
  merged into 255 levels and spread back evenly over P's non-empty bins, and the threshold
  minimizing KL(P || Q) wins (the method of TensorRT's calibrator, also onnxruntime's). Exact
  zeros (a ReLU's, padding's) are left out of both: the zero point represents them exactly, and
  counted in they make every threshold whose levels span several bins pay for spreading the zero
  spike over its first level, which drags the threshold down to the narrowest candidate. Empty
  bins get a little mass relative to the smallest non-empty one: a fixed epsilon comparable to a
  fine histogram's bins would make wide thresholds (more empty bins) look worse than they are.

Both clip their threshold to the observed minimum and maximum, so a ReLU output keeps a range
starting at 0.
"""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "entropy")
NUM_BINS = 8192
MAX_CANDIDATES = 512  # thresholds the entropy method tries (evenly spaced over the histogram)
NUM_LEVELS = 255  # quantization levels the entropy method compares with (int8: 256 values)


class RangeCollector:
    """Running statistics of one tensor over calibration batches; ``range()`` gives (low, high)."""

    def __init__(self, method: str = "minmax", *, percentile: float = 99.999, num_bins: int = NUM_BINS):
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        if num_bins < 2 * NUM_LEVELS or num_bins % 2:
            raise ValueError(f"num_bins must be even and at least {2 * NUM_LEVELS}, got {num_bins}")
        self.method = method
        self.percentile = percentile
        self.num_bins = num_bins
        self.low = np.inf
        self.high = -np.inf
        self.hist: np.ndarray | None = None
        self.half_width = 0.0  # the histogram covers [-half_width, half_width]
        self.zeros = 0  # exact zeros seen (they fall in the bin starting at 0)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values).reshape(-1)
        if not values.size:
            return
        low, high = values.min(), values.max()  # in the values' own dtype: exact, and no copy
        if not (np.isfinite(low) and np.isfinite(high)):  # a NaN or an infinity among them: left out
            values = values[np.isfinite(values)]
            if not values.size:
                return
            low, high = values.min(), values.max()
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))
        if self.method != "minmax":
            values = values.astype(np.float64, copy=False)
            self.zeros += int(np.count_nonzero(values == 0))
            self._histogram(values)

    def _histogram(self, values: np.ndarray) -> None:
        extent = float(np.abs(values).max())
        if self.hist is None:
            self.half_width = extent if extent > 0 else 1.0
            self.hist = np.histogram(values, self.num_bins, range=(-self.half_width, self.half_width))[0]
            return
        if extent > self.half_width:  # widen by whole bins on both sides; old counts stay in their bins
            width = 2 * self.half_width / len(self.hist)
            extra = int(np.ceil((extent - self.half_width) / width))
            self.hist = np.concatenate([np.zeros(extra, np.int64), self.hist, np.zeros(extra, np.int64)])
            self.half_width += extra * width
            self._coarsen(width)
        self.hist = self.hist + np.histogram(values, len(self.hist), range=(-self.half_width, self.half_width))[0]

    def _coarsen(self, width: float) -> None:
        """Merge pairs of adjacent bins until at most ``num_bins`` remain (zero stays a bin edge)."""
        while len(self.hist) > self.num_bins:
            if (len(self.hist) // 2) % 2:  # each half needs an even number of bins to pair them up
                self.hist = np.concatenate([[0], self.hist, [0]])
                self.half_width += width
            self.hist = self.hist.reshape(-1, 2).sum(axis=1)
            width *= 2

    @property
    def seen(self) -> bool:
        return self.low <= self.high

    def range(self) -> tuple[float, float]:
        """The calibrated (low, high) of the tensor."""
        if not self.seen:
            return 0.0, 0.0
        if self.method == "minmax" or self.hist is None:
            return self.low, self.high
        edges = np.linspace(-self.half_width, self.half_width, len(self.hist) + 1)
        if self.method == "percentile":
            low, high = percentile_range(self.hist, edges, self.percentile)
        else:
            one_sided = self.low >= 0
            nonzero = self.hist.copy()
            nonzero[len(nonzero) // 2] -= self.zeros
            if not nonzero.any():
                return self.low, self.high
            threshold = entropy_threshold(nonzero, edges, one_sided=one_sided)
            low, high = (0.0 if one_sided else -threshold), threshold
        return max(low, self.low), min(high, self.high)


def percentile_range(hist: np.ndarray, edges: np.ndarray, percentile: float) -> tuple[float, float]:
    """The histogram edges cutting (100 - percentile) / 2 percent of the mass off each tail."""
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    tail = (100.0 - percentile) / 200.0
    left = int(np.searchsorted(cdf, tail, side="right"))
    right = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
    return float(edges[left]), float(edges[min(right + 1, len(edges) - 1)])


def _smooth(p: np.ndarray) -> np.ndarray | None:
    """Move a little mass onto each empty bin so that KL divergence stays finite, taking it evenly from
    the non-empty bins: half the smallest non-empty bin's mass in all, at most, so that every bin
    stays positive however sparse the histogram (None: p is empty)."""
    zeros = p == 0
    n_zero, n_nonzero = int(zeros.sum()), int(p.size - zeros.sum())
    if not n_nonzero:
        return None
    eps = 0.5 * float(p[~zeros].min()) / max(1.0, n_zero / n_nonzero)
    taken = eps * n_zero / n_nonzero
    return p + np.where(zeros, eps, -taken)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P || Q) of two unnormalized histograms (both smoothed first)."""
    p, q = p / p.sum(), q / q.sum()
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None or (qs <= 0).any():
        return float("inf")
    mask = ps > 0
    return float(np.sum(ps[mask] * np.log(ps[mask] / qs[mask])))


def quantized_histogram(p_bins: np.ndarray, levels: int) -> np.ndarray:
    """``p_bins`` merged into ``levels`` groups of adjacent bins, each group's count spread evenly back
    over its non-empty bins (empty bins stay empty): what quantizing that histogram keeps."""
    n = p_bins.size
    bounds = np.linspace(0, n, levels + 1).astype(np.int64)
    starts = bounds[:-1]
    group = np.repeat(np.arange(levels), np.diff(bounds))
    sums = np.add.reduceat(p_bins, starts)
    nonzero = np.add.reduceat((p_bins != 0).astype(np.int64), starts)
    per_bin = np.where(nonzero > 0, sums / np.maximum(nonzero, 1), 0.0)
    return np.where(p_bins != 0, per_bin[group], 0.0)


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = NUM_LEVELS, *,
                      one_sided: bool = False) -> float:
    """The clipping threshold T minimizing KL(P || Q) over candidate widths: the range is [-T, T], or
    [0, T] when ``one_sided`` (a non-negative tensor, all levels above zero, as after a ReLU)."""
    n = hist.size
    center = n // 2
    hist = hist.astype(np.float64)
    if one_sided:
        hist, edges, center = hist[center:], edges[center:], 0
    best, best_kl = float(edges[-1]), float("inf")
    first = levels if one_sided else (levels + 1) // 2
    last = hist.size if one_sided else center
    step = max(1, (last + 1 - first) // MAX_CANDIDATES)
    for half in range(first, last + 1, step):
        start, stop = (0, half) if one_sided else (center - half, center + half)
        sliced = hist[start:stop]
        if not sliced.any():
            continue
        p = sliced.copy()
        p[0] += hist[:start].sum()
        p[-1] += hist[stop:].sum()
        q = quantized_histogram(sliced, levels)
        if not q.any():
            continue
        kl = kl_divergence(p, q)
        if kl < best_kl:
            best, best_kl = float(edges[stop]), kl
    return best
