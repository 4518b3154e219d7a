"""Timing several variants fairly: warm-up, then interleaved rounds.

Machine drift (turbo clocks, thermal limits, another process waking up) is slow
compared with one inference, so the variants are timed in alternating blocks
(round 1: A then B, round 2: B then A, ...) and every variant sees the same drift.
Per round each variant runs enough iterations for its share of ``min_runs`` and
``min_time_s``, estimated from the warm-up.

Clocks: on the CPU each call is timed with a host clock, ``perf_counter_ns`` unless
the caller passes another (tests pass a fake one, so what they assert does not
depend on how busy the machine is).  The warm-up is governed by the same clock.  On
CUDA every backend is timed the same way, so their cells compare: the host clock
around the call and a device-wide synchronise after it (``CUDA_WALL``).  ONNX
Runtime's ``run_with_iobinding`` synchronises its own stream and cannot record
events on ours, so events for PyTorch and TensorRT would time a different thing
(no launch or sync overhead) than ONNX Runtime's wall clock; one method for all
costs each call a few microseconds of synchronisation, the same for every cell.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

PERF_COUNTER = "perf_counter"
CUDA_WALL = "perf_counter + cuda device synchronize"
TIMER_WORDS = {  # what bench.md says about each
    PERF_COUNTER: "host clock (perf_counter) around each call",
    CUDA_WALL: "host clock around each call, then a device-wide CUDA synchronise (every backend alike)",
}
MAX_RUNS_PER_BLOCK = 100_000
NS_PER_S = 1e9

Clock = Callable[[], int]  # a monotonic host clock in integer nanoseconds


class Runnable(Protocol):
    """One inference on buffers prepared once; ``timer`` says how to time it."""

    timer: str  # timer_for(device)

    def __call__(self) -> None: ...


@dataclass(frozen=True)
class TimingConfig:
    warmup_s: float = 1.0
    warmup_runs: int = 10
    min_runs: int = 50
    min_time_s: float = 2.0  # timed seconds per variant, over all rounds
    rounds: int = 5

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.min_time_s < 0:
            raise ValueError("warm-up and timed durations cannot be negative")
        if self.warmup_runs < 1 or self.min_runs < 1 or self.rounds < 1:
            raise ValueError("warm-up runs, timed runs and rounds must be at least 1")


@dataclass
class Measurement:
    """Samples per variant, plus what happened, in order (for reports and tests)."""

    samples_ms: list[list[float]]
    warmup_runs: list[int]
    warmup_s: list[float]
    blocks: list[tuple[int, int, int]] = field(default_factory=list)  # (round, variant, runs)


def measure(
    variants: Sequence[Runnable],
    config: TimingConfig,
    progress: Callable[[int], None] | None = None,
    clock: Clock = time.perf_counter_ns,
) -> Measurement:
    """Warm every variant up, then time them in ``config.rounds`` interleaved rounds,
    reading ``clock`` for the warm-up and for the CPU samples."""
    count = len(variants)
    result = Measurement([[] for _ in range(count)], [0] * count, [0.0] * count)
    estimates = []
    for index, variant in enumerate(variants):
        runs, seconds, per_call = _warm_up(variant, config, clock)
        result.warmup_runs[index], result.warmup_s[index] = runs, seconds
        estimates.append(per_call)
    per_block = [_runs_per_block(config, estimate) for estimate in estimates]
    for round_index in range(config.rounds):
        order = range(count) if round_index % 2 == 0 else reversed(range(count))
        for index in order:
            samples = time_block(variants[index], per_block[index], clock)
            result.samples_ms[index].extend(samples)
            result.blocks.append((round_index, index, len(samples)))
            if progress is not None:
                progress(len(samples))
    return result


def planned_runs(config: TimingConfig, per_call_s: float) -> int:
    """Timed runs one variant will get when a call takes ``per_call_s``."""
    return config.rounds * _runs_per_block(config, per_call_s)


def _runs_per_block(config: TimingConfig, per_call_s: float) -> int:
    by_count = math.ceil(config.min_runs / config.rounds)
    by_time = math.ceil(config.min_time_s / config.rounds / max(per_call_s, 1e-7))
    return min(MAX_RUNS_PER_BLOCK, max(by_count, by_time))


def _warm_up(variant: Runnable, config: TimingConfig, clock: Clock) -> tuple[int, float, float]:
    """Run until both the run count and the duration are reached; returns
    (runs, seconds, a per-call estimate from the second half of the warm-up)."""
    started = clock()
    durations = []
    while len(durations) < config.warmup_runs or (clock() - started) / NS_PER_S < config.warmup_s:
        durations.append(_wall_call(variant, clock))
    tail = sorted(durations[len(durations) // 2 :])
    return len(durations), (clock() - started) / NS_PER_S, tail[len(tail) // 2]


def _wall_call(variant: Runnable, clock: Clock) -> float:
    """Seconds one call takes, including the device's work (hence the synchronise)."""
    started = clock()
    variant()
    _synchronise(variant)
    return (clock() - started) / NS_PER_S


def timer_for(device: str) -> str:
    """The one timing method of every backend on ``device``."""
    return CUDA_WALL if device == "cuda" else PERF_COUNTER


def _synchronise(variant: Runnable) -> None:
    if variant.timer == CUDA_WALL:
        import torch

        torch.cuda.synchronize()  # device-wide: waits for ONNX Runtime's and TensorRT's streams too


def time_block(variant: Runnable, runs: int, clock: Clock = time.perf_counter_ns) -> list[float]:
    """``runs`` samples in milliseconds, each the call plus (on CUDA) the synchronise."""
    samples = []
    for _ in range(runs):
        started = clock()
        variant()
        _synchronise(variant)
        samples.append((clock() - started) / 1e6)
    return samples
