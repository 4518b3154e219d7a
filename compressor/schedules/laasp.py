"""LAASP: loss-aware automatic selection of the pruning criterion, step by step during training.

One pruning *step* offers every prunable group to every criterion of a pool; each
(group, criterion) pair proposes the channels it would remove, the pairs are
evaluated by the loss they leave on a fixed training subset, and the cheapest is
taken.  Steps repeat inside a *chunk* until a MACs goal is met; the chunk's
removals form one plan that the controller slices once (so optimizer state
survives), then the network recovers for a few epochs before the next chunk.

Two choices differ from the authors' code, on purpose:

* Candidates are evaluated on the live model, their channels zeroed in place
  (``compressor.schedules.laasp_eval``), with the prefix before the first layer a
  candidate touches run once per step, and a candidate stopped as soon as its
  running loss proves it cannot win.  The choices are those of the authors'
  deep-copy-and-prune per candidate; ``StepSettings.shortlist`` trades that for
  speed (a first-order estimate picks the few candidates evaluated).
* The distance criteria remove channels greedily by the distance to their
  *nearest remaining* filter (ties: the smallest summed distance, the FPGM /
  authors' rule).  Summed distance alone favours filters near the group's median
  and can keep an exact duplicate; nearest-neighbour elimination removes one of
  two identical filters first and then treats its twin as unique.

Criteria scores are all "lower = more removable".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, ChannelGroup
from compressor.engine.cost import CostModel
from compressor.errors import CompressorError
from compressor.engine.importance import POOL, WEIGHT_NAMES, Criterion
from compressor.engine.plan import GroupPlan, PruningPlan
from compressor.engine.selection import kept_count_rules
from compressor.schedules.laasp_eval import Batches, Evaluation, LossFn, MaskedEvaluator
from compressor.schedules.laasp_landing import Budget, LandingSearch
from compressor.schedules.laasp_landing import without as _without

TOLERANCE = 0.005  # the last step lands within this of the target whenever the rounding allows it
SEARCH_GAP, SEARCH_STEPS = 0.1, 1.5  # landings searched exactly within max(this, this x the largest step) of the target


def check_pool(pool: Sequence[str]) -> None:
    """The criteria a step may choose from: ``POOL`` of the one criteria table."""
    if not pool:
        raise CompressorError(f"--criteria-pool is empty; give one or more of {', '.join(POOL)}")
    unknown = [name for name in pool if name not in POOL]
    if unknown:
        raise CompressorError(
            f"--criteria-pool: unknown criterion {', '.join(map(repr, unknown))}; choose from {', '.join(POOL)}"
        )
    if len(set(pool)) != len(pool):
        raise CompressorError("--criteria-pool names a criterion twice")


# -- criteria (their measures: compressor.engine.importance.CRITERIA) ---------------------------
def eliminate(distances: np.ndarray, count: int) -> np.ndarray:
    """Remove ``count`` channels one at a time: the one nearest to another remaining
    channel first (ties: smallest summed distance to the rest)."""
    remaining = np.arange(distances.shape[0])
    order = []
    for _ in range(min(count, remaining.size)):
        sub = distances[np.ix_(remaining, remaining)]
        total = sub.sum(axis=1)
        nearest = (sub + np.diag(np.full(remaining.size, np.inf))).min(axis=1) if remaining.size > 1 else total
        pick = int(np.lexsort((total, nearest))[0])
        order.append(int(remaining[pick]))
        remaining = np.delete(remaining, pick)
    return np.array(order, dtype=np.int64)


def removal_order(criterion: str, filters: torch.Tensor, count: int) -> np.ndarray:
    """Row indices of the ``count`` most removable channels under ``criterion``, in order."""
    return _order(POOL[criterion], POOL[criterion].measure(filters), np.arange(filters.shape[0]), count)


def _order(criterion: Criterion, values: np.ndarray, kept: np.ndarray, count: int) -> np.ndarray:
    """Of the rows ``kept``, the ``count`` most removable by ``values`` (the criterion's
    measure on every row): the smallest first, or nearest-neighbour elimination."""
    if criterion.pairwise:
        return kept[eliminate(values[np.ix_(kept, kept)], count)]
    return kept[np.argsort(values[kept], kind="stable")[:count]]


class _Ranker:
    """One group's filters with its distance matrices cached for a chunk (the weights
    do not change inside a chunk)."""

    def __init__(self, filters: torch.Tensor):
        self.filters = filters
        self._cache: dict[str, np.ndarray] = {}

    def order(self, criterion: str, kept: np.ndarray, count: int) -> np.ndarray:
        """Positions (in the group) of the ``count`` channels to remove among ``kept``."""
        if criterion not in self._cache:
            self._cache[criterion] = POOL[criterion].measure(self.filters)
        return _order(POOL[criterion], self._cache[criterion], kept, count)


# -- filters of a group -------------------------------------------------------------------------
def group_filters(graph: ChannelGraph, model: nn.Module) -> dict[str, torch.Tensor]:
    """Each group's channels as the rows of one matrix: the producer filters (conv /
    linear weights along their output dim) of every layer in the group, side by side.
    A group with no producer weight (rare) uses every weight slice of the channel."""
    params = dict(model.named_parameters())
    labels = graph.labels
    owner = np.full(labels.size, -1)
    position = np.full(labels.size, -1)
    for index, group in enumerate(graph.groups):
        owner[group.classes] = index
        position[group.classes] = np.arange(group.size)
    producers: dict[int, list[torch.Tensor]] = {}
    others: dict[int, list[torch.Tensor]] = {}
    for slot in graph.slots:
        param = params.get(slot.key)
        if param is None or slot.tensor not in WEIGHT_NAMES:
            continue
        classes = labels[slot.atoms.ravel()]
        if classes.size != param.shape[slot.dim]:
            continue
        for index in np.unique(owner[classes][owner[classes] >= 0]).tolist():
            atoms = np.flatnonzero(owner[classes] == index)
            rows = _rows(param, slot.dim, atoms, position[classes[atoms]], graph.groups[index].size)
            if rows is not None:
                target = producers if slot.dim == 0 and param.dim() > 1 else others
                target.setdefault(index, []).append(rows)
    result = {}
    for index, group in enumerate(graph.groups):
        pieces = producers.get(index) or others.get(index) or [torch.zeros(group.size, 1)]
        result[group.name] = torch.cat(pieces, dim=1)
    return result


def _rows(param: torch.Tensor, dim: int, atoms: np.ndarray, positions: np.ndarray, size: int) -> torch.Tensor | None:
    """(size, D): row i holds the entries of ``param`` that belong to channel i."""
    counts = np.bincount(positions, minlength=size)
    if counts.min() == 0 or counts.min() != counts.max():
        return None  # the slot covers the group unevenly: not a filter per channel
    ordered = torch.from_numpy(atoms[np.argsort(positions, kind="stable")])
    values = param.detach().movedim(dim, 0)[ordered.to(param.device)]
    return values.reshape(size, -1).float().cpu()


# -- candidates -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupLimits:
    """Kept counts a group may take: multiples of ``block`` (or all ``original``
    channels), never below ``min_keep``; ``select_plan``'s rules (``kept_count_rules``),
    on the group's original size so rounding stays put after slicing."""

    original: int
    block: int
    min_keep: int

    @classmethod
    def of(cls, original: int, round_to: int | None, max_prune_fraction: float, min_width: int) -> "GroupLimits":
        return cls(original, *kept_count_rules(original, round_to, max_prune_fraction, min_width))

    def keep_options(self, kept: int, remove: int) -> list[int]:
        """Allowed kept counts below ``kept``, from the one removing about ``remove``
        channels (at least one block) up to the one removing a single block."""
        largest = (kept - 1) // self.block * self.block
        if largest < self.min_keep:
            return []
        smallest = min(self.original, math.ceil((kept - remove) / self.block) * self.block)
        smallest = max(self.min_keep, min(smallest, largest))
        return list(range(smallest, largest + 1, self.block))


@dataclass(frozen=True)
class StepSettings:
    pool: tuple[str, ...]
    target: float  # cumulative MACs reduction to reach, of the original MACs
    step: float = 0.01  # MACs one step removes, as a fraction of the original MACs
    group_fraction: float | None = None  # instead: this fraction of the group's kept channels
    shortlist: int | None = None  # evaluate only the K candidates with the lowest first-order loss estimate


@dataclass(frozen=True)
class Candidate:
    group: str
    removed: tuple[int, ...]  # positions in the group, in the current model
    criteria: tuple[str, ...]  # every pool criterion that proposed exactly this removal
    reduction: float  # cumulative MACs reduction of the original if applied


class Selector:
    """One chunk of greedy loss-aware steps on the current model; removals accumulate
    in a mask, and ``plan()`` gives them to the slicer in one go."""

    def __init__(
        self,
        model: nn.Module,
        graph: ChannelGraph,
        cost: CostModel,
        dense_macs: int,
        limits: dict[str, GroupLimits],
        evaluator: MaskedEvaluator,
        settings: StepSettings,
    ):
        self.graph, self.cost, self.dense_macs = graph, cost, dense_macs
        self.limits, self.evaluator, self.settings = limits, evaluator, settings
        self.kept = np.ones(graph.labels.size, dtype=bool)
        filters = group_filters(graph, model)
        self.rankers = {g.name: _Ranker(filters[g.name]) for g in graph.groups}
        self.landing = LandingSearch(
            graph.groups, self._estimate, lambda group, state: self._keep_options(group, state, self._estimate),
            settings.target, TOLERANCE, cost.counts_decide_macs(graph.groups),
        )

    def reduction(self, kept: np.ndarray | None = None) -> float:
        return 1.0 - self.cost.macs(self.kept if kept is None else kept) / self.dense_macs

    def _estimate(self, kept: np.ndarray) -> float:
        """``reduction`` in floats: what the landing checks probe with."""
        return 1.0 - self.cost.macs_estimate(kept) / self.dense_macs

    def run(self, goal: float) -> list[dict]:
        """Steps until the reduction reaches ``goal`` (or nothing is left to remove)."""
        steps = []
        while self.reduction() < goal - 1e-12:
            step = self.step()
            if step is None:
                break
            steps.append(step)
        return steps

    def step(self) -> dict | None:
        """Evaluate the candidates, apply the one with the lowest loss, log it."""
        candidates = self.candidates()
        if not candidates:
            return None
        base = ~self.kept
        removals = [~self._kept_after(c) for c in candidates]
        considered = len(candidates)
        if self.settings.shortlist is not None and self.settings.shortlist < len(candidates):
            keep = _lowest(self.evaluator.estimates(base, removals), self.settings.shortlist)
            candidates, removals = [candidates[i] for i in keep], [removals[i] for i in keep]
        evaluation = self.evaluator.evaluate(base, removals)
        best = candidates[evaluation.best()]
        self.kept = self._kept_after(best)
        group = self.graph.group(best.group)
        return {
            "group": best.group,
            "criterion": best.criteria[0],
            "criteria": list(best.criteria),
            "removed": len(best.removed),
            "kept": int(np.count_nonzero(self.kept[group.classes])),
            "loss": evaluation.losses[evaluation.best()],
            "loss_before": evaluation.before,
            "macs_reduction": best.reduction,
            "candidates": considered,
            "evaluated": _evaluated(candidates, evaluation),
        }

    def plan(self) -> PruningPlan:
        return PruningPlan(
            {
                g.name: GroupPlan(g.size, tuple(np.flatnonzero(self.kept[g.classes]).tolist()))
                for g in self.graph.groups
            }
        )

    # -- candidate generation ---------------------------------------------------------------
    def candidates(self) -> list[Candidate]:
        """One candidate per (group, criterion), identical removals merged, keeping
        only those after which the target can still be met within the tolerance."""
        merged: dict[tuple[str, tuple[int, ...]], Candidate] = {}
        for group in self.graph.groups:
            for candidate in self._group_candidates(group):
                key = (candidate.group, candidate.removed)
                if key in merged:
                    previous = merged[key]
                    candidate = replace(previous, criteria=previous.criteria + candidate.criteria)
                merged[key] = candidate
        return self._admissible(list(merged.values()))

    def _group_candidates(self, group: ChannelGroup) -> list[Candidate]:
        kept = np.flatnonzero(self.kept[group.classes])
        options = self._keep_options(group, self.kept)
        if not options:
            return []
        result = []
        for criterion in self.settings.pool:
            order = self.rankers[group.name].order(criterion, kept, kept.size - options[0])
            removed = self._fit(group, order, [kept.size - keep for keep in reversed(options)])
            reduction = self.reduction(_without(self.kept, group, removed))
            result.append(Candidate(group.name, tuple(sorted(removed.tolist())), (criterion,), reduction))
        return result

    def _keep_options(
        self, group: ChannelGroup, state: np.ndarray, reduction: Callable[[np.ndarray], float] | None = None
    ) -> list[int]:
        """Kept counts one step may leave in ``group`` from the kept mask ``state``."""
        reduction = reduction or self.reduction
        kept = np.flatnonzero(state[group.classes])
        limits = self.limits.get(group.name) or GroupLimits(group.size, 1, 1)
        one = reduction(_without(state, group, kept[:1])) - reduction(state)
        if one <= 0:
            return []  # removing this group's channels saves no MACs
        if self.settings.group_fraction is not None:
            remove = max(1, round(self.settings.group_fraction * kept.size))
        else:
            remove = max(1, int(self.settings.step / one + 0.5))
        return limits.keep_options(kept.size, remove)

    def _fit(self, group: ChannelGroup, order: np.ndarray, counts: list[int]) -> np.ndarray:
        """The full step, or the smallest allowed prefix of it that still reaches the
        target when the full step would overshoot it (the last step shrinks to fit)."""
        target = self.settings.target
        if self.reduction(_without(self.kept, group, order)) <= target:
            return order
        for count in counts:  # ascending removal counts
            if self.reduction(_without(self.kept, group, order[:count])) >= target:
                return order[:count]
        return order

    def _admissible(self, candidates: list[Candidate]) -> list[Candidate]:
        """Candidates after which the run can still stop within the tolerance of the
        target; if none can, those with the least overshoot the run can end with.

        Where it can be afforded (``LandingSearch``'s node budget) the answer is exact:
        the states that later steps reach, their MACs counted.  Elsewhere, far from the
        target, a gap counts as closable when one more step (checked exactly) or several
        of the sizes on offer now (``_closable_later``) close it; if none qualifies, the
        least immediate overshoot, else every candidate.

        The several-steps check replaced "a gap wider than any one step": a group whose
        smallest step is a fifth of the network (a 16-channel stem cut in blocks of 8)
        made every small step look too close to the target to take, and forced that
        giant one (ResNet-20: loss 0.22 -> 5.2 in one step).  The exact search came
        when the sizes added up promised a landing that thinner groups no longer gave
        (ResNet-20 at -80 %: only the stem cut was left, -86.7 %)."""
        target, budget = self.settings.target, Budget()
        horizon = self._search_horizon(candidates)
        overshoots = [
            self.landing.overshoot(self._kept_after(c), budget) if target - c.reduction <= horizon else None
            for c in candidates
        ]
        closable_later = self._closable_later(candidates)

        def may_land(candidate: Candidate, overshoot: float | None) -> bool:
            if overshoot is not None:  # searched: exact
                return overshoot <= TOLERANCE
            gap = target - candidate.reduction
            return gap > 0 and (closable_later(gap) or self._closable(candidate))

        good = [c for c, o in zip(candidates, overshoots) if may_land(c, o)]
        if good or not candidates:
            return good
        known = [o for o in overshoots if o is not None and o < math.inf]
        if known:  # no landing within the tolerance: the least overshoot any way ends with
            return [c for c, o in zip(candidates, overshoots) if o is not None and o <= min(known) + 1e-12]
        over = [c for c in candidates if c.reduction > target]
        if not over:
            return candidates
        least = min(c.reduction for c in over)
        return [c for c in over if c.reduction <= least + 1e-12]

    def _search_horizon(self, candidates: list[Candidate]) -> float:
        """How near the target a candidate must leave the run for its landing to be
        searched exactly: dead ends form within a step or two of the largest step on
        offer (further out the search rarely finishes and the sizes added up serve)."""
        now = self.reduction()
        largest = max((c.reduction - now for c in candidates), default=0.0)
        return max(SEARCH_GAP, SEARCH_STEPS * largest)

    def _closable_later(self, candidates: list[Candidate]) -> Callable[[float], bool]:
        """Whether some steps of the sizes on offer now (each group's step, as many
        times as its cap allows) add up to a gap within the tolerance: a knapsack on
        a grid of a fifth of the tolerance, the steps' savings taken as additive (the
        exact check of every step corrects it)."""
        now, unit = self.reduction(), TOLERANCE / 5
        steps = {}
        for c in candidates:
            group = self.graph.group(c.group)
            limits = self.limits.get(c.group) or GroupLimits(group.size, 1, 1)
            kept = int(np.count_nonzero(self.kept[group.classes]))
            steps[c.group] = (max(1, round((c.reduction - now) / unit)), max(1, (kept - limits.min_keep) // len(c.removed)))
        width = round(1.0 / unit) + 1
        reach = 1  # bit k set: k units can be removed by the steps seen so far
        for size, count in steps.values():
            for _ in range(count):
                reach |= (reach << size) & ((1 << width) - 1)
        span = round(TOLERANCE / unit)

        def closable(gap: float) -> bool:
            low = max(0, math.ceil(gap / unit - 1e-9))
            window = (reach >> low) & ((1 << (span + 1)) - 1)
            return low > 0 and window != 0

        return closable

    def _closable(self, candidate: Candidate) -> bool:
        """Can one more step after ``candidate`` land within the tolerance?  Checked
        with the float MACs estimate on every group's allowed step sizes."""
        state = _without(self.kept, self.graph.group(candidate.group), np.array(candidate.removed, dtype=np.int64))
        target = self.settings.target
        for group in self.graph.groups:
            kept = np.flatnonzero(state[group.classes])
            for keep in self._keep_options(group, state):
                estimate = self._estimate(_without(state, group, kept[: kept.size - keep]))
                if target - 1e-9 <= estimate <= target + TOLERANCE:
                    return True
        return False

    def _kept_after(self, candidate: Candidate) -> np.ndarray:
        return _without(self.kept, self.graph.group(candidate.group), np.array(candidate.removed, dtype=np.int64))


def _lowest(values: Sequence[float], count: int) -> list[int]:
    """Indices of the ``count`` lowest values (ties: the first), in index order, so the
    shortlist keeps the candidates' order and with it the tie-break."""
    return sorted(np.argsort(np.asarray(values), kind="stable")[:count].tolist())


def _evaluated(candidates: Sequence[Candidate], evaluation: Evaluation) -> list[dict]:
    """The step log's candidates: the loss, or null and the bound that stopped it."""
    rows = []
    for c, loss, bound in zip(candidates, evaluation.losses, evaluation.bounds):
        row = {"group": c.group, "criteria": list(c.criteria), "removed": len(c.removed), "loss": loss}
        if loss is None:
            row["loss_at_least"] = bound
        rows.append(row)
    return rows


def prune_chunk(
    model: nn.Module,
    graph: ChannelGraph,
    cost: CostModel,
    dense_macs: int,
    limits: dict[str, GroupLimits],
    batches: Batches,
    settings: StepSettings,
    goal: float,
    loss_fn: LossFn | None = None,
    reuse_prefix: bool = True,
    early_exit: bool = True,
) -> tuple[PruningPlan, list[dict]]:
    """Greedy loss-aware steps on ``model`` until ``goal``; the plan and the step log.

    ``model`` is left exactly as it was: the plan says what to slice.
    ``reuse_prefix=False, early_exit=False`` runs the whole model on the whole subset
    per candidate (the reference path); every setting makes the same choices."""
    evaluator = MaskedEvaluator(model, graph, batches, loss_fn, reuse_prefix, early_exit)
    selector = Selector(model, graph, cost, dense_macs, limits, evaluator, settings)
    steps = selector.run(goal)
    return selector.plan(), steps


