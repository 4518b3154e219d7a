"""Where LAASP's remaining steps can end: an exact search for the least overshoot.

The greedy stops at the first state at or past the MACs target.  Whether some
sequence of allowed steps from a state stops within the tolerance cannot be read
off the step sizes on offer: a step's saving shrinks as the groups it shares
layers with thin out, so sizes added up promise landings that do not exist.  On
ResNet-20 in blocks of 8 at -80 % that promise walked the greedy into a state
from which only the stem cut was left (-86.7 %); searched, the same state lands at
-80.0 % whatever the losses then favour.

``LandingSearch`` walks the states themselves (MACs of each one counted, not
summed) depth first, the largest steps first, and stops at the first landing
within the tolerance.  A state's answer depends only on its kept mask (on
its kept counts, where they decide the MACs), so answers are kept for the
selector's life.  The search is exhaustive only when
it must report an overshoot, which is affordable near the end, where few
groups still have room; a node budget per step bounds it elsewhere, and the
caller falls back to its own estimate where the budget ran out (``None``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from compressor.engine.analysis.graph import ChannelGroup

SEARCH_NODES = 1500  # states one step's searches may expand; past it the caller's estimate decides

KeepOptions = Callable[[ChannelGroup, np.ndarray], list[int]]


class OutOfNodes(Exception):
    """The step's node budget is spent; the state's answer is unknown."""


class Budget:
    def __init__(self, nodes: int = SEARCH_NODES):
        self.left = nodes

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise OutOfNodes


class LandingSearch:
    """The least overshoot of ``target`` that allowed steps from a state end with
    (0 where it is met exactly; ``math.inf`` where every way stops short of it)."""

    def __init__(
        self,
        groups: Sequence[ChannelGroup],
        reduction: Callable[[np.ndarray], float],
        keep_options: KeepOptions,
        target: float,
        tolerance: float,
        counts_decide: bool,
    ):
        self.groups, self.reduction, self.keep_options = groups, reduction, keep_options
        self.target, self.tolerance = target, tolerance
        self._known: dict[bytes, float] = {}
        self._by_counts = counts_decide
        classes = [group.classes for group in groups]
        self._classes = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
        self._starts = np.cumsum([0] + [c.size for c in classes[:-1]]) if classes else np.zeros(0, dtype=np.int64)

    def overshoot(self, state: np.ndarray, budget: Budget) -> float | None:
        """The least overshoot from ``state``, or None where ``budget`` ran out first."""
        try:
            return self._search(state, self.reduction(state), budget)
        except OutOfNodes:
            return None

    def _search(self, state: np.ndarray, reduction: float, budget: Budget) -> float:
        if reduction >= self.target - 1e-9:
            return max(0.0, reduction - self.target)
        key = self._key(state)
        if key in self._known:
            return self._known[key]
        budget.spend()
        children = sorted(self._children(state), key=lambda child: -child[1])
        best = math.inf
        for child, child_reduction in children:  # the largest steps first: the target is reached soonest
            best = min(best, self._search(child, child_reduction, budget))
            if best <= self.tolerance:
                break  # lands: no search for a closer landing, the greedy only needs one
        self._known[key] = best
        return best

    def _key(self, state: np.ndarray) -> bytes:
        """Where the MACs depend only on the kept counts (``CostModel.counts_decide_macs``),
        states with the same counts are one: the criteria's different removals of one
        group's block share an answer."""
        if self._by_counts and self._classes.size:
            return np.add.reduceat(state[self._classes].astype(np.int64), self._starts).tobytes()
        return np.packbits(state).tobytes()

    def _children(self, state: np.ndarray) -> list[tuple[np.ndarray, float]]:
        children = []
        for group in self.groups:
            kept = np.flatnonzero(state[group.classes])
            for keep in self.keep_options(group, state):
                child = without(state, group, kept[: kept.size - keep])
                children.append((child, self.reduction(child)))
        return children


def without(kept: np.ndarray, group: ChannelGroup, positions: np.ndarray) -> np.ndarray:
    """A copy of the kept-class mask with ``positions`` of ``group`` removed."""
    result = kept.copy()
    result[group.classes[positions]] = False
    return result
