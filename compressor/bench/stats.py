"""Summary statistics of latency samples.

The median is the headline (robust to the odd preempted run); p90/p99 show the
tail a service sees; mean ± std and min are there for comparison with tools that
report them.  Percentiles use linear interpolation (numpy's default), so they are
defined for any sample count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from compressor.artifacts import LatencyFigures


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput: float  # images per second at the median latency

    def to_dict(self) -> LatencyFigures:
        return asdict(self)


def summarise(samples_ms, batch_size: int) -> LatencyStats:
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("no latency samples to summarise")
    if not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise ValueError("latency samples must be finite and non-negative")
    median = float(np.median(samples))
    return LatencyStats(
        runs=int(samples.size),
        median_ms=median,
        p90_ms=float(np.percentile(samples, 90)),
        p99_ms=float(np.percentile(samples, 99)),
        mean_ms=float(samples.mean()),
        # Sample standard deviation (n - 1): the runs are a sample of the latency distribution.
        std_ms=float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        min_ms=float(samples.min()),
        max_ms=float(samples.max()),
        throughput=batch_size * 1000.0 / median if median > 0 else float("inf"),
    )


@dataclass(frozen=True)
class Comparison:
    """A pruned variant against its dense original on the same backend and batch."""

    speedup: float  # dense median / pruned median
    macs_ratio: float | None  # dense MACs / pruned MACs
    efficiency: float | None  # speedup / macs_ratio: 1.0 = the MACs saving fully became speed

    def to_dict(self) -> dict:
        return asdict(self)


def compare(dense: LatencyStats, pruned: LatencyStats, dense_macs: int | None, pruned_macs: int | None) -> Comparison:
    speedup = dense.median_ms / pruned.median_ms
    if dense_macs and pruned_macs:
        ratio = dense_macs / pruned_macs
        return Comparison(speedup, ratio, speedup / ratio)
    return Comparison(speedup, None, None)


def relative_difference(a: float, b: float) -> float:
    """|a - b| relative to their mean: how far two runs of one benchmark disagree."""
    return abs(a - b) / ((a + b) / 2) if a + b > 0 else 0.0
