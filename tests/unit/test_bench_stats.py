"""The latency statistics and the interleaved timing loop, on known inputs."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from compressor.bench.rounding import MULTIPLES, choose, efficiency, score
from compressor.artifacts import LatencyFigures
from compressor.bench.stats import LatencyStats, compare, relative_difference, summarise
from compressor.bench.timing import PERF_COUNTER, TimingConfig, measure, planned_runs


def test_summary_of_known_samples():
    samples = [float(v) for v in range(1, 101)]  # 1..100 ms
    stats = summarise(samples, batch_size=4)
    assert stats.runs == 100
    assert stats.median_ms == 50.5
    assert stats.p90_ms == pytest.approx(90.1)  # linear interpolation between the 90th and 91st
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == 50.5
    assert stats.std_ms == pytest.approx(np.std(samples, ddof=1))
    assert (stats.min_ms, stats.max_ms) == (1.0, 100.0)
    assert stats.throughput == pytest.approx(4 * 1000 / 50.5)


def test_the_record_type_lists_the_statistics_fields_in_order():
    """LatencyFigures (compressor.artifacts, the bench record's type) restates LatencyStats' fields:
    the lower layer cannot import the bench package, so this keeps the two from parting."""
    assert list(LatencyFigures.__annotations__) == [field.name for field in dataclasses.fields(LatencyStats)]
    assert set(summarise([1.0, 2.0], 1).to_dict()) == set(LatencyFigures.__annotations__)


def test_one_sample_and_bad_samples():
    stats = summarise([2.0], batch_size=1)
    assert (stats.median_ms, stats.p99_ms, stats.std_ms, stats.throughput) == (2.0, 2.0, 0.0, 500.0)
    for bad in ([], [1.0, float("nan")], [-1.0]):
        with pytest.raises(ValueError):
            summarise(bad, batch_size=1)


def test_median_ignores_an_outlier_the_mean_does_not():
    stats = summarise([1.0] * 9 + [100.0], batch_size=1)
    assert stats.median_ms == 1.0
    assert stats.mean_ms == pytest.approx(10.9)


def test_comparison_speedup_macs_ratio_efficiency():
    dense, pruned = summarise([10.0, 10.0, 10.0], 1), summarise([6.0, 6.0, 6.0], 1)
    result = compare(dense, pruned, dense_macs=200, pruned_macs=100)
    assert result.speedup == pytest.approx(10 / 6)
    assert result.macs_ratio == 2.0
    assert result.efficiency == pytest.approx(10 / 6 / 2)
    unknown = compare(dense, pruned, None, 100)
    assert unknown.macs_ratio is None and unknown.efficiency is None
    assert relative_difference(100.0, 104.0) == pytest.approx(4 / 102)


class FakeClock:
    """Integer nanoseconds that move only when a fake workload says it ran: the timing
    loop's decisions then depend on the workload, not on how busy the machine is."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


class Work:
    """A runnable that takes ``costs_ms`` of fake time (one per call, the last one
    repeating) on ``clock`` and logs when it ran."""

    timer = PERF_COUNTER

    def __init__(self, name: str, costs_ms: float | list[float], clock: FakeClock, log: list):
        self.name, self.clock, self.log = name, clock, log
        self.costs_ms = costs_ms if isinstance(costs_ms, list) else [costs_ms]
        self.calls = 0

    def __call__(self) -> None:
        cost = self.costs_ms[min(self.calls, len(self.costs_ms) - 1)]
        self.calls += 1
        self.log.append(self.name)
        self.clock.now_ns += round(cost * 1e6)


def test_warm_up_runs_both_the_count_and_the_duration():
    clock, log = FakeClock(), []
    config = TimingConfig(warmup_s=0.05, warmup_runs=3, min_runs=4, min_time_s=0.0, rounds=2)
    result = measure([Work("A", 1.0, clock, log)], config, clock=clock)
    assert result.warmup_runs == [50]  # 50 ms of 1 ms calls, not just the 3 runs
    assert result.warmup_s == [0.05]
    assert result.samples_ms == [[1.0] * 4]
    assert len(log) == 50 + 4

    slow = Work("B", 20.0, clock, [])
    config = TimingConfig(warmup_s=0.0, warmup_runs=3, min_runs=2, min_time_s=0.0, rounds=1)
    result = measure([slow], config, clock=clock)
    assert result.warmup_runs == [3]  # the count governs when the duration is already met
    assert result.warmup_s == [0.06]

    config = TimingConfig(warmup_s=0.05, warmup_runs=3, min_runs=2, min_time_s=0.0, rounds=1)
    result = measure([Work("C", 20.0, clock, [])], config, clock=clock)
    assert result.warmup_runs == [3] and result.warmup_s == [0.06]  # 3 x 20 ms passes 50 ms on the 3rd run


def test_variants_are_interleaved_in_alternating_rounds():
    clock, log = FakeClock(), []
    a, b = Work("A", 0.5, clock, log), Work("B", 0.25, clock, log)
    config = TimingConfig(warmup_s=0.0, warmup_runs=2, min_runs=6, min_time_s=0.0, rounds=3)
    result = measure([a, b], config, clock=clock)
    assert [(r, v) for r, v, _ in result.blocks] == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]
    assert all(runs == 2 for _, _, runs in result.blocks)  # 6 runs over 3 rounds
    timed = log[4:]  # after 2 + 2 warm-up calls, A first then B
    assert log[:4] == ["A", "A", "B", "B"]
    assert timed == ["A"] * 2 + ["B"] * 4 + ["A"] * 4 + ["B"] * 2
    assert result.samples_ms == [[0.5] * 6, [0.25] * 6]  # milliseconds, each variant its own


def test_timed_runs_cover_the_minimum_time_estimated_from_the_warm_up_tail():
    """Cold first calls (10 ms) must not shrink the timed runs: the estimate is the
    median of the warm-up's second half (2 ms), so each round gets 20 ms / 2 ms runs."""
    clock, log = FakeClock(), []
    config = TimingConfig(warmup_s=0.0, warmup_runs=4, min_runs=1, min_time_s=0.06, rounds=3)
    result = measure([Work("A", [10.0, 10.0, 2.0], clock, log)], config, clock=clock)
    assert result.warmup_runs == [4] and result.warmup_s == [0.024]
    assert [runs for _, _, runs in result.blocks] == [10, 10, 10]
    assert result.samples_ms == [[2.0] * 30]
    assert sum(result.samples_ms[0]) == 60.0
    assert planned_runs(config, 0.002) == 30


def test_progress_reports_each_block():
    clock, reported = FakeClock(), []
    config = TimingConfig(warmup_s=0.0, warmup_runs=1, min_runs=4, min_time_s=0.0, rounds=2)
    measure([Work("A", 1.0, clock, []), Work("B", 1.0, clock, [])], config, progress=reported.append, clock=clock)
    assert reported == [2, 2, 2, 2]


def test_timing_config_rejects_nonsense():
    with pytest.raises(ValueError):
        TimingConfig(min_runs=0)
    with pytest.raises(ValueError):
        TimingConfig(warmup_s=-1)


def _staircase(step: int, top: int = 64, low: int = 32) -> dict[int, float]:
    """Latency of a kernel that pads channels up to a multiple of ``step``."""
    return {w: (math.ceil(w / step) * step) ** 2 / 1000 for w in range(low, top + 1)}


@pytest.mark.parametrize("step", [4, 8, 16])
def test_rounding_picks_the_step_of_a_padding_kernel(step):
    chosen, scores = choose(_staircase(step))
    assert chosen == step
    assert scores[step] == pytest.approx(1.0)  # multiples of the step are perfectly efficient
    assert all(scores[m] < 0.99 for m in MULTIPLES if m < step)


def test_rounding_picks_one_when_latency_follows_macs():
    proportional = {w: w * w / 1000 for w in range(32, 65)}
    chosen, scores = choose(proportional)
    assert chosen == 1
    assert efficiency(proportional, 40) == pytest.approx(1.0)
    assert score(proportional, 8) == pytest.approx(1.0)


def test_a_multiple_seen_at_one_width_only_is_not_judged():
    """In a 32..64 sweep only w=32 is a multiple of 32 below the top: one noisy width
    must not decide (CI once picked 32 from a lucky sample and made 50 % unreachable)."""
    latency = _staircase(8)
    latency[32] = latency[32] / 3  # w=32 happened to run 3x faster
    chosen, scores = choose(latency)
    assert math.isnan(scores[32]) and chosen in (8, 16)  # 32 is a multiple of both
