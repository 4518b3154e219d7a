"""LAASP: loss-aware automatic selection of the pruning criterion, step by step during training.

One pruning *step* offers every prunable group to every criterion of a pool; each
(group, criterion) pair proposes the channels it would remove, the pairs are
evaluated by the loss they leave on a fixed training subset, and the cheapest is
taken.  Steps repeat inside a *chunk* until a MACs goal is met; the chunk's
removals form one plan that the controller slices once (so optimizer state
survives), then the network recovers for a few epochs before the next chunk.

Two choices differ from the authors' code, on purpose:

* Candidates are evaluated on the live model: the removed channels' parameter
  slices are zeroed in place, the subset is run in eval mode, and the saved
  slices are copied back bit for bit.  The masked model computes what the sliced
  one would (the engine's invariant), so this equals the authors' deep-copy and
  prune per candidate at the cost of a few forward passes and no model copy.
  The layers before the first one a candidate touches are run once per step, not
  once per candidate (``compressor.schedules.prefix_cache``): they see the same
  parameters for every candidate, so the losses, hence the choices, are those of
  the whole forward, at about half its cost on a ResNet.
* The distance criteria remove channels greedily by the distance to their
  *nearest remaining* filter (ties: the smallest summed distance, the FPGM /
  authors' rule).  Summed distance alone favours filters near the group's median
  and can keep an exact duplicate; nearest-neighbour elimination removes one of
  two identical filters first and then treats its twin as unique.

Criteria scores are all "lower = more removable".
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, ChannelGroup
from compressor.engine.cost import CostModel
from compressor.errors import CompressorError
from compressor.engine.importance import POOL, WEIGHT_NAMES, Criterion
from compressor.engine.plan import GroupPlan, PruningPlan
from compressor.engine.selection import kept_count_rules
from compressor.schedules.prefix_cache import PrefixRunner

TOLERANCE = 0.005  # the last step lands within this of the target whenever the rounding allows it
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


# -- evaluation ---------------------------------------------------------------------------------
class MaskedEvaluator:
    """The loss of the current model with some channels removed, without copying it.

    The removed channels' parameter slices (producer rows, BN scale and shift,
    consumer columns) are zeroed in place, the batches run in eval mode under
    ``no_grad``, and the saved slices are written back exactly.

    ``losses`` evaluates a step's candidates.  With ``reuse_prefix`` (and a model
    that ``PrefixRunner`` can trace) the layers before the first one a candidate
    touches run once per step instead of once per candidate: they see the same
    parameters either way, so each loss is the same number the whole forward would
    give (``reuse_prefix=False`` is that whole forward per candidate, the reference).
    """

    def __init__(
        self,
        model: nn.Module,
        graph: ChannelGraph,
        batches: Batches,
        loss_fn: LossFn | None = None,
        reuse_prefix: bool = True,
    ):
        self.model = model
        self.loss_fn = loss_fn or F.cross_entropy
        device = next(model.parameters()).device
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        if not self.batches:
            raise CompressorError("loss-aware selection needs at least one batch of selection data")
        params = {id(p) for p in model.parameters()}
        self.slots = []  # (tensor, dim, class id per index)
        for slot in graph.slots:
            owner = model.get_submodule(slot.module) if slot.module else model
            tensor = getattr(owner, slot.tensor)
            if id(tensor) in params:  # running statistics need no zeroing: scale and shift are zero
                self.slots.append((tensor, slot.dim, graph.labels[slot.atoms.ravel()]))
        self.runner = PrefixRunner.build(model, self.batches[0][0]) if reuse_prefix else None
        self.forwards = 0  # passes over one batch, whole or from a cut

    @torch.no_grad()
    def loss(self, removed: np.ndarray) -> float:
        """Mean loss over the batches with the classes where ``removed`` is True zeroed."""
        with self._zeroed(removed), self._eval():
            return self._mean(lambda index: self.model(self.batches[index][0]))

    def losses(self, base: np.ndarray, removals: Sequence[np.ndarray]) -> tuple[float, list[float]]:
        """The loss with ``base`` removed, and with each of ``removals`` (supersets of ``base``)."""
        if self.runner is None:
            return self.loss(base), [self.loss(removed) for removed in removals]
        return self._losses_from_cuts(base, removals)

    @torch.no_grad()
    def _losses_from_cuts(self, base: np.ndarray, removals: Sequence[np.ndarray]) -> tuple[float, list[float]]:
        """Candidates in the order of their cuts: every batch is advanced (with ``base``
        zeroed) to the next cut once, then each candidate there zeroes its own extra
        channels and runs only the rest of the network."""
        runner = self.runner
        cuts = [runner.cut(self._touched(removed & ~base)) for removed in removals]
        losses = [0.0] * len(removals)
        with self._zeroed(base), self._eval():
            positions = [runner.start(inputs) for inputs, _ in self.batches]
            for index in sorted(range(len(removals)), key=cuts.__getitem__):
                self._advance(positions, cuts[index])
                with self._zeroed(removals[index] & ~base):
                    losses[index] = self._mean(lambda b: runner.finish(positions[b]))
            self._advance(positions, len(runner.nodes) - 1)
            before = self._mean(lambda b: runner.finish(positions[b]))
        return before, losses

    def _advance(self, positions: list, cut: int) -> None:
        for position in positions:
            self.runner.advance(position, cut)

    def _touched(self, removed: np.ndarray) -> list[torch.Tensor]:
        return [tensor for tensor, _, classes in self.slots if removed[classes].any()]

    def _mean(self, outputs: Callable[[int], torch.Tensor]) -> float:
        """The mean loss over the batches, batch ``b`` giving ``outputs(b)``: one sum in
        batch order for every path, so the paths round alike."""
        total, count = 0.0, 0
        for index, (_, targets) in enumerate(self.batches):
            total += float(self.loss_fn(outputs(index), targets)) * len(targets)
            count += len(targets)
            self.forwards += 1
        return total / count

    @contextmanager
    def _zeroed(self, removed: np.ndarray) -> Iterator[None]:
        """Zero the slices of the classes where ``removed`` is True; write them back on exit."""
        saved = []
        try:
            for tensor, dim, classes in self.slots:
                hit = np.flatnonzero(removed[classes])
                if hit.size:
                    index = torch.from_numpy(hit).to(tensor.device)
                    saved.append((tensor, dim, index, tensor.index_select(dim, index)))
                    tensor.index_fill_(dim, index, 0.0)
            yield
        finally:
            for tensor, dim, index, values in reversed(saved):
                tensor.index_copy_(dim, index, values)

    @contextmanager
    def _eval(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)


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

    def reduction(self, kept: np.ndarray | None = None) -> float:
        return 1.0 - self.cost.macs(self.kept if kept is None else kept) / self.dense_macs

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
        """Evaluate every candidate, apply the one with the lowest loss, log it."""
        candidates = self.candidates()
        if not candidates:
            return None
        before, losses = self.evaluator.losses(~self.kept, [~self._kept_after(c) for c in candidates])
        best = candidates[int(np.argmin(losses))]
        self.kept = self._kept_after(best)
        group = self.graph.group(best.group)
        return {
            "group": best.group,
            "criterion": best.criteria[0],
            "criteria": list(best.criteria),
            "removed": len(best.removed),
            "kept": int(np.count_nonzero(self.kept[group.classes])),
            "loss": float(min(losses)),
            "loss_before": before,
            "macs_reduction": best.reduction,
            "evaluated": [
                {"group": c.group, "criteria": list(c.criteria), "removed": len(c.removed), "loss": loss}
                for c, loss in zip(candidates, losses)
            ],
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

    def _keep_options(self, group: ChannelGroup, state: np.ndarray) -> list[int]:
        """Kept counts one step may leave in ``group`` from the kept mask ``state``."""
        kept = np.flatnonzero(state[group.classes])
        limits = self.limits.get(group.name) or GroupLimits(group.size, 1, 1)
        one = self.reduction(_without(state, group, kept[:1])) - self.reduction(state)
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
        """Candidates that land within the tolerance of the target, or stop short of it
        by a gap that is either wider than any one step (later steps will shape it)
        or that one more step can close within the tolerance.  If none qualifies:
        the least overshoot, else every candidate."""
        target = self.settings.target
        widest = max((c.reduction for c in candidates), default=0.0) - self.reduction()
        good = [
            c for c in candidates
            if target <= c.reduction <= target + TOLERANCE
            or (c.reduction < target and (target - c.reduction > widest or self._closable(c)))
        ]
        if good or not candidates:
            return good
        over = [c for c in candidates if c.reduction > target]
        if not over:
            return candidates
        least = min(c.reduction for c in over)
        return [c for c in over if c.reduction <= least + 1e-12]

    def _closable(self, candidate: Candidate) -> bool:
        """Can one more step after ``candidate`` land within the tolerance?  Checked
        with the float MACs estimate on every group's allowed step sizes."""
        state = _without(self.kept, self.graph.group(candidate.group), np.array(candidate.removed, dtype=np.int64))
        target = self.settings.target
        for group in self.graph.groups:
            kept = np.flatnonzero(state[group.classes])
            for keep in self._keep_options(group, state):
                estimate = 1.0 - self.cost.macs_estimate(_without(state, group, kept[: kept.size - keep])) / self.dense_macs
                if target - 1e-9 <= estimate <= target + TOLERANCE:
                    return True
        return False

    def _kept_after(self, candidate: Candidate) -> np.ndarray:
        return _without(self.kept, self.graph.group(candidate.group), np.array(candidate.removed, dtype=np.int64))


def _without(kept: np.ndarray, group: ChannelGroup, positions: np.ndarray) -> np.ndarray:
    """A copy of the kept-class mask with ``positions`` of ``group`` removed."""
    result = kept.copy()
    result[group.classes[positions]] = False
    return result


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
) -> tuple[PruningPlan, list[dict]]:
    """Greedy loss-aware steps on ``model`` until ``goal``; the plan and the step log.

    ``model`` is left exactly as it was: the plan says what to slice.
    ``reuse_prefix=False`` runs the whole model per candidate (the reference path)."""
    evaluator = MaskedEvaluator(model, graph, batches, loss_fn, reuse_prefix)
    selector = Selector(model, graph, cost, dense_macs, limits, evaluator, settings)
    steps = selector.run(goal)
    return selector.plan(), steps


