"""Turn importance scores into a plan that meets a MACs-reduction or speed-up target.

One global threshold over the normalised scores decides how many channels each
group keeps, subject to a per-group cap on the pruned fraction, a minimum width
and rounding of the kept count to a multiple of ``round_to``.  The threshold is
found by bisection with MACs predicted analytically; a final pass adds channel
blocks back while the target still holds, so the result lands as close to the
target as the rounding allows.

The budget's currency is MACs by default; with ``speedup`` (and a ``LatencyModel``)
it is predicted latency on the deploy target, searched as the latency reduction
``1 - 1/speedup``: the same bisection and refill, only the price of a plan changes.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from compressor.engine.analysis.graph import ChannelGraph, ChannelGroup
from compressor.engine.cost import CostModel
from compressor.engine.latency import LatencyModel
from compressor.arguments import check_fields, check_type
from compressor.errors import CompressorError, deprecated
from compressor.engine.plan import GroupPlan, PruningPlan

DEFAULT_ROUND_TO = 8
ROUND_MIN_CHANNELS = 16


@dataclass(frozen=True, init=False)
class SelectionConfig:
    flops_reduction: float  # the fraction of the MACs to remove, as PruneConfig.flops_reduction
    round_to: int | None = None  # None: 8 for groups of >= 16 channels, else 1
    max_prune_fraction: float = 0.75
    min_width: int = 1
    speedup: float | None = None  # instead of flops_reduction: predicted latency <= dense / speedup

    def __init__(self, flops_reduction: float | None = None, round_to: int | None = None,
                 max_prune_fraction: float = 0.75, min_width: int = 1, *, macs_reduction: float | None = None,
                 speedup: float | None = None):
        if macs_reduction is not None:  # the deprecated name, kept for one release
            deprecated("SelectionConfig(macs_reduction=...)", "SelectionConfig(flops_reduction=...)")
            if flops_reduction is not None:
                raise TypeError("SelectionConfig: give flops_reduction, not also its deprecated name macs_reduction")
            flops_reduction = macs_reduction
        if flops_reduction is None and speedup is not None:  # a latency budget alone: SelectionConfig(speedup=2)
            check_speedup(speedup)
            flops_reduction = 1.0 - 1.0 / speedup  # not the budget; what the same MACs ratio would remove
        if flops_reduction is None:
            raise TypeError("SelectionConfig() missing its argument 'flops_reduction' (or 'speedup')")
        for name, value in (("flops_reduction", flops_reduction), ("round_to", round_to),
                            ("max_prune_fraction", max_prune_fraction), ("min_width", min_width),
                            ("speedup", speedup)):
            object.__setattr__(self, name, value)
        self.__post_init__()

    @property
    def macs_reduction(self) -> float:
        """Deprecated name of ``flops_reduction``."""
        deprecated("SelectionConfig.macs_reduction", "flops_reduction")
        return self.flops_reduction

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 < self.flops_reduction < 1.0:
            raise CompressorError(f"the MACs reduction must be in (0, 1), got {self.flops_reduction}")
        if not 0.0 < self.max_prune_fraction <= 1.0:
            raise CompressorError(f"the max prune fraction must be in (0, 1], got {self.max_prune_fraction}")
        if self.round_to is not None and self.round_to < 1:
            raise CompressorError(f"--round-to must be >= 1, got {self.round_to}")
        if self.min_width < 1:
            raise CompressorError(f"the minimum width must be >= 1, got {self.min_width}")
        check_speedup(self.speedup)


class UnreachableTargetError(CompressorError):
    def __init__(self, target: float, reachable: float):
        super().__init__(
            f"a {target:.1%} MACs reduction is unreachable with these limits; the maximum reachable is "
            f"{reachable:.1%} (raise --max-prune-fraction, lower --round-to, or --ignore fewer layers)"
        )
        self.reachable = reachable


class UnreachableSpeedupError(CompressorError):
    def __init__(self, target: float, reachable: float, where: str):
        super().__init__(
            f"a {target:.2f}x speed-up on {where} is unreachable with these limits; the best reachable is "
            f"{reachable:.2f}x (predicted from the latency table; raise --max-prune-fraction, lower --round-to, "
            "or --ignore fewer layers)"
        )
        self.reachable = reachable


def check_speedup(speedup: float | None) -> None:
    """The one rule for a speed-up target: a finite number above 1."""
    if speedup is not None and (isinstance(speedup, bool) or not math.isfinite(speedup) or speedup <= 1.0):
        raise CompressorError(f"--speedup must be a number > 1 (the dense latency / the pruned one), got {speedup}")


@dataclass(frozen=True)
class _GroupRanking:
    group: ChannelGroup
    order: np.ndarray  # positions within the group, most important first
    sorted_scores: np.ndarray  # descending
    floor: int  # the fewest channels kept, already a multiple of step (or the whole group)
    step: int

    def keep_count(self, threshold: float) -> int:
        above = int(np.searchsorted(-self.sorted_scores, -threshold, side="right"))
        return self.round(max(self.floor, above))

    def round(self, count: int) -> int:
        return min(self.group.size, int(math.ceil(count / self.step) * self.step))


def kept_count_rules(size: int, round_to: int | None, max_prune_fraction: float, min_width: int) -> tuple[int, int]:
    """``(step, min_keep)`` for a group of ``size`` channels: the kept count is a multiple
    of ``step`` (or the whole group) and at least ``min_keep``.  The one home of these
    rules: ``select_plan`` and LAASP's ``GroupLimits`` both ask here.

    ``step`` is ``round_to`` (default 8) for groups of at least 16 channels and 1 below
    that.  A group narrower than the multiple keeps widths the hardware still likes: the
    gcd of the two (16 channels at --round-to 32 keep all 16, 24 at 32 keep 8, 16 or 24),
    never arbitrary ones.  ``min_keep`` is the cap on the pruned fraction and the minimum
    width, rounded up to a step and at most the whole group."""
    step = round_to if round_to is not None else DEFAULT_ROUND_TO
    if size < ROUND_MIN_CHANNELS:
        step = 1
    elif step > size:
        step = math.gcd(step, size)
    floor = min(size, max(min_width, math.ceil(size * (1.0 - max_prune_fraction))))
    return step, min(size, math.ceil(floor / step) * step)


def _rank(group: ChannelGroup, scores: np.ndarray, config: SelectionConfig) -> _GroupRanking:
    values = scores[group.classes]
    order = np.argsort(-values, kind="stable")
    step, floor = kept_count_rules(group.size, config.round_to, config.max_prune_fraction, config.min_width)
    return _GroupRanking(group, order, values[order], floor, step)


class _Search:
    def __init__(self, graph: ChannelGraph, cost: CostModel, rankings: list[_GroupRanking],
                 latency: LatencyModel | None = None):
        self.graph, self.cost, self.rankings, self.latency = graph, cost, rankings, latency

    def kept_mask(self, counts: list[int]) -> np.ndarray:
        kept = np.ones(self.graph.labels.size, dtype=bool)
        for ranking, count in zip(self.rankings, counts):
            kept[ranking.group.classes[ranking.order[count:]]] = False
        return kept

    def reduction(self, counts: list[int]) -> float:
        if self.latency is not None:
            return self.exact_reduction(counts)
        return 1.0 - self.cost.macs_estimate(self.kept_mask(counts)) / self.cost.dense_macs

    def exact_reduction(self, counts: list[int]) -> float:
        """The budget's currency: MACs, or predicted latency when a latency model is given."""
        if self.latency is not None:
            return 1.0 - self.latency.estimate(self.kept_mask(counts)) / self.latency.dense_ms
        return 1.0 - self.cost.macs(self.kept_mask(counts)) / self.cost.dense_macs

    def counts_at(self, threshold: float) -> list[int]:
        return [r.keep_count(threshold) for r in self.rankings]


def _check_selection_arguments(graph, cost, scores, config, latency) -> None:
    check_type(graph, ChannelGraph, "graph", "select_plan", "a ChannelGraph (from analyse)")
    check_type(cost, CostModel, "cost", "select_plan", "a CostModel")
    check_type(scores, np.ndarray, "scores", "select_plan", "a numpy array of channel scores (e.g. group_l2)")
    check_type(config, SelectionConfig, "config", "select_plan",
               "a SelectionConfig (a PruneConfig is for OneCyclePruner)")
    if latency is not None:
        check_type(latency, LatencyModel, "latency", "select_plan", "a LatencyModel (from a LatencyTable)")


def select_plan(graph: ChannelGraph, cost: CostModel, scores: np.ndarray, config: SelectionConfig,
                latency: LatencyModel | None = None) -> PruningPlan:
    """The plan with the fewest removed channels whose MACs reduction (or, with
    ``config.speedup``, predicted speed-up on ``latency``'s target) reaches the target."""
    _check_selection_arguments(graph, cost, scores, config, latency)
    if config.speedup is not None and latency is None:
        raise CompressorError("a speed-up target needs a latency model of the deploy target (latency=...)")
    rankings = [_rank(g, scores, config) for g in graph.groups]
    search = _Search(graph, cost, rankings, latency if config.speedup is not None else None)
    target = config.flops_reduction if config.speedup is None else 1.0 - 1.0 / config.speedup
    floor_counts = [r.round(r.floor) for r in rankings]
    reachable = search.reduction(floor_counts)
    if reachable < target:
        if config.speedup is not None:
            raise UnreachableSpeedupError(config.speedup, 1.0 / (1.0 - reachable), latency.table.describe())
        raise UnreachableTargetError(target, reachable)
    thresholds = np.unique(np.concatenate([r.sorted_scores for r in rankings] + [np.array([np.inf])]))
    low, high = 0, thresholds.size - 1  # reduction(thresholds[high]) >= target
    while low < high:
        mid = (low + high) // 2
        if search.reduction(search.counts_at(thresholds[mid])) >= target:
            high = mid
        else:
            low = mid + 1
    counts = search.counts_at(thresholds[high])
    while search.exact_reduction(counts) < target and high < thresholds.size - 1:
        high += 1  # the float estimate sat on the boundary: step to the next threshold
        counts = search.counts_at(thresholds[high])
    counts = _refill(search, counts, target)
    return PruningPlan(
        {
            r.group.name: GroupPlan(r.group.size, tuple(sorted(r.order[:c].tolist())))
            for r, c in zip(rankings, counts)
        }
    )


def _refill(search: _Search, counts: list[int], target: float) -> list[int]:
    """Give back whole rounding blocks, most important first, while the target holds.

    Giving a block back only raises MACs, so a block that does not fit now never
    will: each group is dropped from the pass at its first misfit.
    """
    counts = list(counts)
    candidates = []  # (-score of the group's next block, group index)
    for index, (ranking, count) in enumerate(zip(search.rankings, counts)):
        if ranking.round(count + 1) > count:
            heapq.heappush(candidates, (-float(ranking.sorted_scores[count]), index))
    while candidates:
        _, index = heapq.heappop(candidates)
        ranking = search.rankings[index]
        trial = counts.copy()
        trial[index] = ranking.round(counts[index] + 1)
        if search.exact_reduction(trial) < target:
            continue
        counts = trial
        if ranking.round(counts[index] + 1) > counts[index]:
            heapq.heappush(candidates, (-float(ranking.sorted_scores[counts[index]]), index))
    return counts
